package bot

// The messages about a plan: the ephemeral plan, its notices, and the approval request.

import (
	"fmt"
	"strings"
	"time"

	"github.com/slack-go/slack"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/commands"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/patch"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// targetLine renders one instance the plan patches: name, ID, engine,
// whole version, status and its window, once; a forced instance outside
// its window is marked.
func (k kit) targetLine(t upgrade.PlanItem, at time.Time) string {
	inst := t.Instance
	window, closed := windowText(inst.MaintenanceWindow, at)
	line := fmt.Sprintf("• %s — %s %s, %s, %s",
		k.who(inst.Name, inst.ID), esc(engineName(inst.Engine)), esc(patch.VersionOf(inst)), esc(inst.Status), window)
	switch {
	case t.Warning != "" && closed:
		// The warning is the closed window the row already shows.
		line += " :warning: forced (--force)"
	case t.Warning != "":
		line += " :warning: " + esc(t.Warning)
	}
	return line
}

func (k kit) skipLine(s upgrade.Skip, at time.Time) string {
	name := "`" + esc(s.Ref) + "`"
	if s.Instance != nil {
		name = k.who(s.Instance.Name, s.Instance.ID)
	}
	if s.OutsideWindow && s.Instance != nil {
		// Said from the window itself, so the row shows it once and says
		// when it opens.
		if window, closed := windowText(s.Instance.MaintenanceWindow, at); closed {
			return fmt.Sprintf("• %s — outside its maintenance %s; add --force to patch it anyway", name, window)
		}
	}
	return fmt.Sprintf("• %s — %s", name, esc(s.Reason))
}

// PlanView is what the plan message shows besides the plan itself.
type PlanView struct {
	RequestID string
	DryRun    bool
	Approval  bool      // confirming requests approval instead of patching
	ExpiresAt time.Time // when the buttons stop working
	Note      string    // shown above the plan, e.g. why a fresh plan replaced an old one
	Scheduled int       // instances left out of the plan for now, scheduled for their window (--wait-for-window)
	Target    string    // the GeminiDB target's label; "" when the bot has one target
}

// planBlocks renders the ephemeral plan: what will be patched, what is
// skipped and why, and Confirm/Cancel when something is patchable.
func (k kit) planBlocks(p upgrade.Plan, v PlanView) []slack.Block {
	var blocks []slack.Block
	if v.Note != "" {
		// The note can list many instances (drift): keep it within limits.
		lines := strings.Split(v.Note, "\n")
		blocks = append(blocks, listSections(truncate(":information_source: "+lines[0], 500), lines[1:], 1500, "")...)
	}
	head := fmt.Sprintf("*GeminiDB patch plan* `%s`\n%s to patch", v.RequestID, plural(len(p.Targets), "instance"))
	if len(p.Targets) > 0 {
		head += " (" + engineCounts(p.Targets) + ") in " + plural(len(p.Batches), "batch call")
	}
	head += ", " + fmt.Sprintf("%d skipped.", len(p.Skipped))
	if v.DryRun {
		head += "\n*Dry run:* nothing will be patched."
	}
	blocks = append(blocks, section(head))
	blocks = appendTarget(blocks, v.Target)
	if len(p.Targets) > 0 {
		lines := make([]string, len(p.Targets))
		for i, t := range p.Targets {
			lines[i] = k.targetLine(t, p.CheckedAt)
		}
		blocks = append(blocks, listSections("*Will be patched*", lines, 5000, " (the thread lists every instance after confirmation)")...)
	}
	if len(p.Skipped) > 0 {
		lines := make([]string, len(p.Skipped))
		for i, s := range p.Skipped {
			lines[i] = k.skipLine(s, p.CheckedAt)
		}
		blocks = append(blocks, listSections("*Skipped*", lines, 1500, "")...)
	}
	if w := warningCount(p); w > 0 {
		blocks = append(blocks, contextBlock(fmt.Sprintf(":warning: %s (--force).", outsideWindows(w, "will be patched"))))
	}
	if v.Scheduled > 0 {
		blocks = append(blocks, contextBlock(fmt.Sprintf(":calendar: %s outside the maintenance window will be sent when the window opens (--wait-for-window).", plural(v.Scheduled, "instance"))))
	} else if n := outsideWindowCount(p); n > 0 {
		them := "them"
		if n == 1 {
			them = "it"
		}
		blocks = append(blocks, contextBlock(fmt.Sprintf(":warning: %s and left out; run the command again with --force to include %s.", outsideWindows(n, "is"), them)))
	}
	switch {
	case v.DryRun:
		blocks = append(blocks, contextBlock("Run the command again without --dry-run to patch."))
	case !p.Patchable() && v.Scheduled == 0:
		blocks = append(blocks, contextBlock("Nothing can be patched, so there is nothing to confirm."))
	default:
		n := len(p.Targets) + v.Scheduled
		confirmText := "Patch now"
		label := fmt.Sprintf("Patch %s", plural(n, "instance"))
		dialog := fmt.Sprintf("The patch starts on %s as the plan shows; a batch call in flight cannot be undone.", plural(n, "instance"))
		// Danger marks the one button that starts patching; asking for
		// approval starts nothing.
		style := slack.StyleDanger
		if v.Approval {
			confirmText = "Request approval"
			label = "Request approval"
			dialog = fmt.Sprintf("An approver will be asked to approve patching %s.", plural(n, "instance"))
			style = slack.StylePrimary
		}
		confirm := slack.NewButtonBlockElement(ActionConfirm, v.RequestID, plain(label)).
			WithStyle(style).
			WithConfirm(slack.NewConfirmationBlockObject(plain("Patch GeminiDB instances?"), plain(dialog), plain(confirmText), plain("Back")))
		cancel := slack.NewButtonBlockElement(ActionCancel, v.RequestID, plain("Cancel"))
		blocks = append(blocks, slack.NewActionBlock("plan_actions", confirm, cancel))
		if !v.ExpiresAt.IsZero() {
			blocks = append(blocks, contextBlock(fmt.Sprintf("This plan can be confirmed until %s.", slackDate(v.ExpiresAt))))
		}
	}
	return blocks
}

func outsideWindowCount(p upgrade.Plan) int {
	n := 0
	for _, s := range p.Skipped {
		if s.OutsideWindow {
			n++
		}
	}
	return n
}

func warningCount(p upgrade.Plan) int {
	n := 0
	for _, t := range p.Targets {
		if t.Warning != "" {
			n++
		}
	}
	return n
}

// expiredNote is what replaces a plan or approval request past its TTL.
func expiredNote(r store.Request) string {
	return fmt.Sprintf(":hourglass: Plan `%s` expired at %s; nothing was patched. Run the command again for a fresh plan.", r.ID, slackDate(r.ExpiresAt))
}

// noticeBlocks is a one-section message, used to replace a plan once it is
// decided (cancelled, expired, submitted) so its buttons disappear.
func noticeBlocks(text string) []slack.Block {
	return []slack.Block{section(truncate(text, maxSectionChars))}
}

// approvalBlocks renders the channel message that asks an approver to approve.
func (k kit) approvalBlocks(r store.Request, p upgrade.Plan, approvers []string) []slack.Block {
	head := fmt.Sprintf(":raised_hand: <@%s> asks to patch %s (%s) — request `%s`.\nApprovers: %s. The requester cannot approve their own request.",
		r.Requester, plural(len(p.Targets), "GeminiDB instance"), engineCounts(p.Targets), r.ID, mentionList(approvers))
	blocks := []slack.Block{section(head)}
	lines := make([]string, len(p.Targets))
	for i, t := range p.Targets {
		lines[i] = k.targetLine(t, p.CheckedAt)
	}
	blocks = append(blocks, listSections("", lines, listText, " — `"+esc(commands.Command)+" status "+esc(r.ID)+"` lists all")...)
	if w := warningCount(p); w > 0 {
		blocks = append(blocks, contextBlock(fmt.Sprintf(":warning: %s (--force).", outsideWindows(w, "is"))))
	}
	// Approve starts the patch: it is the danger button; Reject starts nothing.
	approve := slack.NewButtonBlockElement(ActionApprove, r.ID, plain("Approve")).WithStyle(slack.StyleDanger).
		WithConfirm(slack.NewConfirmationBlockObject(plain("Approve the patch?"), plain(fmt.Sprintf("The patch starts immediately on %s.", plural(len(p.Targets), "instance"))), plain("Approve and patch"), plain("Back")))
	reject := slack.NewButtonBlockElement(ActionReject, r.ID, plain("Reject"))
	blocks = append(blocks, slack.NewActionBlock("approval_actions", approve, reject))
	if !r.ExpiresAt.IsZero() {
		blocks = append(blocks, contextBlock(fmt.Sprintf("Can be approved until %s.", slackDate(r.ExpiresAt))))
	}
	return blocks
}

// mentionList renders user IDs as mentions and user-group IDs (S…) as group mentions.
func mentionList(ids []string) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		if strings.HasPrefix(id, "S") {
			parts[i] = "<!subteam^" + id + ">"
		} else {
			parts[i] = "<@" + id + ">"
		}
	}
	return strings.Join(parts, ", ")
}
