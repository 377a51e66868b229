package bot

import (
	"fmt"
	"strings"

	"github.com/slack-go/slack"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/patch"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// Slack's limits on a message's text in all (chat.postMessage truncates
// text beyond 40,000 characters, but a message of blocks is refused well
// before: we keep the fleet views under 10,000 characters of text) and the
// budgets the fleet views share it out by.
const (
	maxFleetText     = 10000
	fleetPatchShown  = 20   // instances to patch listed by name at most
	fleetPatchBudget = 4500 // characters of the "Will be patched" list
	fleetBlockBudget = 2500 // characters of the "Blocked" list
	fleetNoteBudget  = 600  // characters of the note above the plan
)

// budgetSections renders lines after title as sections within Slack's
// limit per section, as many as fit in budget characters and at most
// maxLines lines; the lines left out are counted in a last line made by
// more (e.g. "… and 143 more").
func budgetSections(title string, lines []string, maxLines, budget int, more func(n int) string) []slack.Block {
	const reserve = 120 // for the "… and N more" line
	shown, used := 0, len(title)
	for shown < len(lines) && shown < maxLines {
		n := len(truncate(lines[shown], maxSectionChars-len(title)-1)) + 1
		left := len(lines) - shown - 1
		if used+n > budget-reserve && (left > 0 || used+n > budget) {
			break
		}
		used += n
		shown++
	}
	out := append([]string(nil), lines[:shown]...)
	if rest := len(lines) - shown; rest > 0 {
		out = append(out, more(rest))
	}
	var blocks []slack.Block
	for _, c := range packLines(title, out) {
		blocks = append(blocks, section(c.text))
	}
	return blocks
}

// blockKind is a blocked instance's reason in a few words, to count the
// blocked ones by: "outside the maintenance window", "status not normal".
func blockKind(s upgrade.Skip) string {
	r := s.Reason
	switch {
	case s.OutsideWindow:
		return "outside the maintenance window"
	case strings.HasPrefix(r, "engine "):
		return "engine not supported by the batch API"
	case strings.HasPrefix(r, "no patch available"):
		return "no patch available"
	case strings.HasPrefix(r, "instance status is"):
		return "status not normal"
	case strings.HasPrefix(r, "node "):
		return "a node not normal"
	case strings.HasPrefix(r, "operation in progress"):
		return "an operation in progress"
	case strings.HasPrefix(r, "not found"):
		return "not found"
	case strings.HasPrefix(r, "name "):
		return "name matches several instances"
	}
	return truncate(r, 80)
}

// blockKinds counts p's skipped instances by blockKind, in order of first
// appearance: "3 outside the maintenance window, 1 status not normal".
func blockKinds(p upgrade.Plan) string {
	var order []string
	n := map[string]int{}
	for _, s := range p.Skipped {
		k := blockKind(s)
		if n[k] == 0 {
			order = append(order, k)
		}
		n[k]++
	}
	parts := make([]string, len(order))
	for i, k := range order {
		parts[i] = fmt.Sprintf("%d %s", n[k], esc(k))
	}
	return strings.Join(parts, ", ")
}

// fleetTargetLine is an instance to patch, short: name (linked), engine
// and version, and a warning when it is forced.
func (k kit) fleetTargetLine(t upgrade.PlanItem) string {
	line := fmt.Sprintf("• %s — %s %s", k.name(t.Instance.Name, t.Instance.ID), esc(engineName(t.Instance.Engine)), esc(patch.VersionOf(t.Instance)))
	if t.Warning != "" {
		line += " :warning: forced (--force)"
	}
	return line
}

// fleetPlanBlocks renders the ephemeral plan of a request with selectors:
// the counts (matched, to patch, up to date, blocked and why), the blocked
// instances, at most fleetPatchShown of those to patch, and Confirm/Cancel
// when something is patchable. It stays within Slack's limits for any
// number of instances: at most 50 blocks, 3,000 characters per text and
// maxFleetText characters in all.
func (k kit) fleetPlanBlocks(p upgrade.Plan, v PlanView, f Fleet) []slack.Block {
	var blocks []slack.Block
	if v.Note != "" {
		lines := strings.Split(v.Note, "\n")
		blocks = append(blocks, budgetSections(truncate(":information_source: "+lines[0], 400), lines[1:], 5, fleetNoteBudget, func(n int) string { return fmt.Sprintf("… and %d more", n) })...)
	}
	head := fmt.Sprintf("*GeminiDB patch plan* `%s` for `%s`\n", v.RequestID, esc(truncate(f.Selectors, 300)))
	head += fmt.Sprintf("%d matched: *%d to patch*", f.Matched, len(p.Targets))
	if len(p.Targets) > 0 {
		head += " (" + engineCounts(p.Targets) + ") in " + plural(len(p.Batches), "batch call")
	}
	head += fmt.Sprintf(", %d already up to date, %d blocked", f.UpToDate, len(p.Skipped))
	if len(p.Skipped) > 0 {
		head += " (" + blockKinds(p) + ")"
	}
	head += "."
	if named := namedCount(p); named > 0 {
		head += fmt.Sprintf("\nThe plan includes %s named in the command.", plural(named, "instance"))
	}
	if v.DryRun {
		head += "\n*Dry run:* nothing will be patched."
	}
	blocks = append(blocks, section(truncate(head, maxSectionChars)))
	blocks = appendTarget(blocks, v.Target)
	if len(p.Skipped) > 0 {
		lines := make([]string, len(p.Skipped))
		for i, s := range p.Skipped {
			lines[i] = k.skipLine(s, p.CheckedAt)
		}
		blocks = append(blocks, budgetSections("*Blocked*", lines, len(lines), fleetBlockBudget, func(n int) string {
			return fmt.Sprintf("… and %d more blocked", n)
		})...)
	}
	if len(p.Targets) > 0 {
		lines := make([]string, len(p.Targets))
		for i, t := range p.Targets {
			lines[i] = k.fleetTargetLine(t)
		}
		blocks = append(blocks, budgetSections("*Will be patched*", lines, fleetPatchShown, fleetPatchBudget, func(n int) string {
			return fmt.Sprintf("… and %d more (the thread lists every instance after confirmation)", n)
		})...)
	}
	return append(blocks, k.planFooter(p, v)...)
}

// namedCount is how many of p's instances were named rather than selected:
// selected ones are referred to by their ID.
func namedCount(p upgrade.Plan) int {
	n := 0
	for _, t := range p.Targets {
		if t.Ref != t.Instance.ID {
			n++
		}
	}
	for _, s := range p.Skipped {
		if s.Instance == nil || s.Ref != s.Instance.ID {
			n++
		}
	}
	return n
}

// planFooter is the end of a plan message: the window notes and the
// buttons. It is taken from planBlocks, which ends with the same footer of
// context and action blocks, so that the two plans cannot drift apart;
// without a note or a target label nothing but sections comes before it.
func (k kit) planFooter(p upgrade.Plan, v PlanView) []slack.Block {
	v.Note, v.Target = "", ""
	all := k.planBlocks(p, v)
	i := len(all)
	for i > 0 && isFooterBlock(all[i-1]) {
		i--
	}
	return all[i:]
}

// isFooterBlock tells the blocks a plan's footer is made of.
func isFooterBlock(b slack.Block) bool {
	switch b.(type) {
	case *slack.ContextBlock, *slack.ActionBlock:
		return true
	}
	return false
}

// planView renders a plan: the fleet view when it was made from
// selectors (fleet is not nil), else the plan of named instances.
func (b *Bot) planView(tg *target, p upgrade.Plan, v PlanView, fleet *Fleet) []slack.Block {
	if fleet != nil {
		return b.kitOf(tg).fleetPlanBlocks(p, v, *fleet)
	}
	return b.kitOf(tg).planBlocks(p, v)
}
