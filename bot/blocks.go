package bot

import (
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/slack-go/slack"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// Button action IDs: part of the contract with Slack (DESIGN.md).
const (
	ActionConfirm = "patch_confirm"
	ActionCancel  = "patch_cancel"
	ActionApprove = "patch_approve"
	ActionReject  = "patch_reject"
)

// Slack's limits (api.slack.com/reference/block-kit): a message holds at most
// 50 blocks and a section's text at most 3,000 characters. We stay below both
// with a margin so that escaping and a footer never tip a message over.
const (
	maxSectionChars = 2900
	maxListSections = 12 // list sections in one message; the rest is summarised
	maxMessageChars = 3000
)

// esc escapes the three characters Slack's mrkdwn treats as control characters.
func esc(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

func mrkdwn(text string) *slack.TextBlockObject {
	return slack.NewTextBlockObject(slack.MarkdownType, text, false, false)
}

func plain(text string) *slack.TextBlockObject {
	return slack.NewTextBlockObject(slack.PlainTextType, text, false, false)
}

func section(text string) *slack.SectionBlock {
	return slack.NewSectionBlock(mrkdwn(text), nil, nil)
}

func contextBlock(text string) *slack.ContextBlock {
	return slack.NewContextBlock("", mrkdwn(text))
}

// truncate shortens s to at most max bytes without splitting a character.
func truncate(s string, max int) string {
	if len(s) <= max {
		return s
	}
	cut := max - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// chunk is the text of one section and how many lines it holds.
type chunk struct {
	text  string
	lines int
}

// packLines packs lines, after title, into section texts within Slack's
// limit; an overlong line is shortened.
func packLines(title string, lines []string) []chunk {
	var out []chunk
	cur := chunk{text: title}
	for _, line := range lines {
		line = truncate(line, maxSectionChars-len(title)-1)
		if cur.text != "" && len(cur.text)+1+len(line) > maxSectionChars {
			out = append(out, cur)
			cur = chunk{}
		}
		if cur.text != "" {
			cur.text += "\n"
		}
		cur.text += line
		cur.lines++
	}
	if cur.text != "" {
		out = append(out, cur)
	}
	return out
}

// listSections renders lines as at most maxSections sections; lines that do
// not fit are counted in a last "…and N more" section followed by more
// (e.g. where to find them).
func listSections(title string, lines []string, maxSections int, more string) []slack.Block {
	chunks := packLines(title, lines)
	var blocks []slack.Block
	shown := 0
	for i, c := range chunks {
		if i == maxSections-1 && len(chunks) > maxSections {
			blocks = append(blocks, section(fmt.Sprintf("…and %d more%s", len(lines)-shown, more)))
			break
		}
		blocks = append(blocks, section(c.text))
		shown += c.lines
	}
	return blocks
}

// engineCounts renders "cassandra 13, influxdb 10" in the order engines first appear.
func engineCounts(targets []upgrade.Target) string {
	var order []string
	n := map[string]int{}
	for _, t := range targets {
		if n[t.Instance.Engine] == 0 {
			order = append(order, t.Instance.Engine)
		}
		n[t.Instance.Engine]++
	}
	parts := make([]string, len(order))
	for i, e := range order {
		parts[i] = fmt.Sprintf("%s %d", e, n[e])
	}
	return strings.Join(parts, ", ")
}

func plural(n int, word string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, word)
	}
	return fmt.Sprintf("%d %ss", n, word)
}

func targetLine(t upgrade.Target) string {
	inst := t.Instance
	window := inst.MaintenanceWindow
	if window == "" {
		window = "none"
	} else {
		window += " UTC"
	}
	line := fmt.Sprintf("• *%s* `%s` — %s %s, %s, patch available, window %s",
		esc(inst.Name), esc(inst.ID), esc(inst.Engine), esc(inst.Version), esc(inst.Status), esc(window))
	if t.Warning != "" {
		line += " :warning: " + esc(t.Warning)
	}
	return line
}

func skipLine(s upgrade.Skip) string {
	name := "`" + esc(s.Ref) + "`"
	if s.Instance != nil && s.Instance.Name != "" && s.Instance.Name != s.Ref {
		name = fmt.Sprintf("*%s* `%s`", esc(s.Instance.Name), esc(s.Instance.ID))
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
	Target    string    // the GeminiDB target's label; "" when the bot has one target
}

// planBlocks renders the ephemeral plan: what will be patched, what is
// skipped and why, and Confirm/Cancel when something is patchable.
func planBlocks(p upgrade.Plan, v PlanView) []slack.Block {
	var blocks []slack.Block
	if v.Note != "" {
		// The note can list many instances (drift): keep it within limits.
		lines := strings.Split(v.Note, "\n")
		blocks = append(blocks, listSections(truncate(":information_source: "+lines[0], 500), lines[1:], 3, "")...)
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
			lines[i] = targetLine(t)
		}
		blocks = append(blocks, listSections("*Will be patched*", lines, maxListSections, " (the thread lists every instance after confirmation)")...)
	}
	if len(p.Skipped) > 0 {
		lines := make([]string, len(p.Skipped))
		for i, s := range p.Skipped {
			lines[i] = skipLine(s)
		}
		blocks = append(blocks, listSections("*Skipped*", lines, 6, "")...)
	}
	if w := warningCount(p); w > 0 {
		blocks = append(blocks, contextBlock(fmt.Sprintf(":warning: %s will be patched outside their maintenance window (--force).", plural(w, "instance"))))
	}
	if n := outsideWindowCount(p); n > 0 {
		which := fmt.Sprintf("%d instances are", n)
		if n == 1 {
			which = "1 instance is"
		}
		blocks = append(blocks, contextBlock(fmt.Sprintf(":warning: %s outside the maintenance window and left out; run the command again with --force to include them.", which)))
	}
	switch {
	case v.DryRun:
		blocks = append(blocks, contextBlock("Run the command again without --dry-run to patch."))
	case !p.Patchable():
		blocks = append(blocks, contextBlock("Nothing can be patched, so there is nothing to confirm."))
	default:
		confirmText := "Patch now"
		label := fmt.Sprintf("Patch %s", plural(len(p.Targets), "instance"))
		dialog := fmt.Sprintf("The patch starts immediately on %s and cannot be stopped from Slack.", plural(len(p.Targets), "instance"))
		if v.Approval {
			confirmText = "Request approval"
			label = "Request approval"
			dialog = fmt.Sprintf("An approver will be asked to approve patching %s.", plural(len(p.Targets), "instance"))
		}
		confirm := slack.NewButtonBlockElement(ActionConfirm, v.RequestID, plain(label)).
			WithStyle(slack.StyleDanger).
			WithConfirm(slack.NewConfirmationBlockObject(plain("Patch GeminiDB instances?"), plain(dialog), plain(confirmText), plain("Back")))
		cancel := slack.NewButtonBlockElement(ActionCancel, v.RequestID, plain("Cancel"))
		blocks = append(blocks, slack.NewActionBlock("plan_actions", confirm, cancel))
		if !v.ExpiresAt.IsZero() {
			blocks = append(blocks, contextBlock(fmt.Sprintf("This plan can be confirmed until %s UTC.", v.ExpiresAt.UTC().Format("15:04"))))
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
	return fmt.Sprintf(":hourglass: Plan `%s` expired at %s UTC; nothing was patched. Run the command again for a fresh plan.", r.ID, r.ExpiresAt.UTC().Format("15:04"))
}

// noticeBlocks is a one-section message, used to replace a plan once it is
// decided (cancelled, expired, submitted) so its buttons disappear.
func noticeBlocks(text string) []slack.Block {
	return []slack.Block{section(text)}
}

// approvalBlocks renders the channel message that asks an approver to approve.
func approvalBlocks(r store.Request, p upgrade.Plan, approvers []string) []slack.Block {
	head := fmt.Sprintf(":raised_hand: <@%s> asks to patch %s (%s) — request `%s`.\nApprovers: %s. The requester cannot approve their own request.",
		r.Requester, plural(len(p.Targets), "GeminiDB instance"), engineCounts(p.Targets), r.ID, mentionList(approvers))
	blocks := []slack.Block{section(head)}
	lines := make([]string, len(p.Targets))
	for i, t := range p.Targets {
		lines[i] = targetLine(t)
	}
	blocks = append(blocks, listSections("", lines, maxListSections, "")...)
	if w := warningCount(p); w > 0 {
		blocks = append(blocks, contextBlock(fmt.Sprintf(":warning: %s outside their maintenance window (--force).", plural(w, "instance is"))))
	}
	approve := slack.NewButtonBlockElement(ActionApprove, r.ID, plain("Approve")).WithStyle(slack.StylePrimary).
		WithConfirm(slack.NewConfirmationBlockObject(plain("Approve the patch?"), plain(fmt.Sprintf("The patch starts immediately on %s.", plural(len(p.Targets), "instance"))), plain("Approve and patch"), plain("Back")))
	reject := slack.NewButtonBlockElement(ActionReject, r.ID, plain("Reject")).WithStyle(slack.StyleDanger)
	blocks = append(blocks, slack.NewActionBlock("approval_actions", approve, reject))
	if !r.ExpiresAt.IsZero() {
		blocks = append(blocks, contextBlock(fmt.Sprintf("Can be approved until %s UTC.", r.ExpiresAt.UTC().Format("15:04"))))
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

// Counts is how a request's instances stand. NotSubmitted counts the
// instances that certainly did not start (the cloud's error, or not sent by
// the bot); Unknown those whose batch call may have reached GeminiDB.
type Counts struct {
	Running, Completed, Failed, NotSubmitted, Unknown, Unfollowed int
}

// countJobs derives the counts from the batch results and the tracked jobs.
func countJobs(results []upgrade.UpgradeResult, jobs []store.Job) Counts {
	var c Counts
	for _, r := range results {
		switch {
		case unknownOutcome(r):
			c.Unknown++
		case !r.Submitted():
			c.NotSubmitted++
		}
	}
	for _, j := range jobs {
		switch {
		case j.Status == upgrade.JobCompleted:
			c.Completed++
		case j.Status == upgrade.JobFailed:
			c.Failed++
		case j.GaveUp:
			c.Unfollowed++
		default:
			c.Running++
		}
	}
	return c
}

// String renders the counts for the channel message, e.g.
// "running 2 · completed 1 · failed 0 · not submitted 0 · unknown 1".
func (c Counts) String() string {
	s := fmt.Sprintf("running %d · completed %d · failed %d · not submitted %d", c.Running, c.Completed, c.Failed, c.NotSubmitted)
	if c.Unknown > 0 {
		s += fmt.Sprintf(" · unknown %d", c.Unknown)
	}
	if c.Unfollowed > 0 {
		s += fmt.Sprintf(" · no longer followed %d", c.Unfollowed)
	}
	return s
}

// batchTail renders the not-submitted and unknown counts of batch answers,
// e.g. ", 2 not submitted, 1 unknown: may have started".
func (c Counts) batchTail() string {
	s := fmt.Sprintf(", %d not submitted", c.NotSubmitted)
	if c.Unknown > 0 {
		s += fmt.Sprintf(", %d unknown: may have started", c.Unknown)
	}
	return s
}

// ParentView is what the channel (parent) message shows.
type ParentView struct {
	Request  store.Request
	Plan     upgrade.Plan
	Counts   *Counts // nil before the batch calls answered
	Finished bool
	Target   string // the GeminiDB target's label; "" when the bot has one target
}

// parentBlocks renders the channel message: who patches how many instances
// of which engine, the --force acknowledgement, and the counts.
func parentBlocks(v ParentView) []slack.Block {
	r, p := v.Request, v.Plan
	head := fmt.Sprintf(":wrench: <@%s> is patching %s (%s) — request `%s`.",
		r.Requester, plural(len(p.Targets), "GeminiDB instance"), engineCounts(p.Targets), r.ID)
	if v.Finished {
		head = fmt.Sprintf(":checkered_flag: <@%s>'s patch of %s (%s) — request `%s` — has finished.",
			r.Requester, plural(len(p.Targets), "GeminiDB instance"), engineCounts(p.Targets), r.ID)
	}
	if r.Approver != "" {
		head += fmt.Sprintf(" Approved by <@%s>.", r.Approver)
	}
	blocks := []slack.Block{section(head)}
	blocks = appendTarget(blocks, v.Target)
	if w := warningCount(p); w > 0 {
		var names []string
		for _, t := range p.Targets {
			if t.Warning != "" {
				names = append(names, "`"+esc(t.Instance.Name)+"`")
			}
		}
		list := truncate(strings.Join(names, ", "), 1500)
		blocks = append(blocks, section(fmt.Sprintf(":warning: *Forced outside the maintenance window* (--force acknowledged by <@%s>): %s", r.Requester, list)))
	}
	status := "Submitting…"
	if v.Counts != nil {
		status = v.Counts.String()
	}
	blocks = append(blocks, contextBlock(status+" · details in the thread"))
	return blocks
}

// parentText is the notification text of the parent message.
func parentText(v ParentView) string {
	return fmt.Sprintf("<@%s> is patching %s (request %s)", v.Request.Requester, plural(len(v.Plan.Targets), "GeminiDB instance"), v.Request.ID)
}

// resultLines renders one line per instance of the batch answers: its job
// ID, or its error code and message verbatim.
func resultLines(p upgrade.Plan, results []upgrade.UpgradeResult) []string {
	names := map[string]string{}
	for _, t := range p.Targets {
		names[t.Instance.ID] = t.Instance.Name
	}
	lines := make([]string, len(results))
	for i, r := range results {
		who := fmt.Sprintf("*%s* `%s`", esc(names[r.InstanceID]), esc(r.InstanceID))
		switch {
		case r.Submitted():
			lines[i] = fmt.Sprintf(":large_blue_circle: %s — job `%s`", who, esc(r.JobID))
		case unknownOutcome(r):
			lines[i] = fmt.Sprintf(":grey_question: %s — outcome unknown (`%s`) %s", who, esc(r.ErrorCode), esc(r.ErrorMessage))
		default:
			lines[i] = fmt.Sprintf(":x: %s — `%s` %s", who, esc(r.ErrorCode), esc(r.ErrorMessage))
		}
	}
	return lines
}

// messages splits lines into whole messages (each at most ten sections,
// within Slack's limits), so a long list becomes several thread replies and
// nothing is cut off.
func messages(title string, lines []string) [][]slack.Block {
	parts := messageParts(title, lines)
	out := make([][]slack.Block, len(parts))
	for i, p := range parts {
		out[i] = p.blocks
	}
	return out
}

// part is one message of a long report and how many of its lines it holds.
type part struct {
	blocks []slack.Block
	lines  int
}

// messageParts is messages, telling how many lines each message holds.
func messageParts(title string, lines []string) []part {
	var out []part
	for i, c := range packLines(title, lines) {
		if i%10 == 0 {
			out = append(out, part{})
		}
		p := &out[len(out)-1]
		p.blocks = append(p.blocks, section(c.text))
		p.lines += c.lines
	}
	return out
}

// jobLine renders one finished (or abandoned) job for its thread reply.
func jobLine(j store.Job, now time.Time) string {
	who := fmt.Sprintf("*%s* `%s`", esc(j.InstanceName), esc(j.InstanceID))
	took := ""
	if !j.Started.IsZero() && !j.Ended.IsZero() {
		took = ", took " + j.Ended.Sub(j.Started).Round(time.Second).String()
	}
	switch {
	case j.Status == upgrade.JobCompleted:
		return fmt.Sprintf(":white_check_mark: %s — job `%s` Completed%s.", who, esc(j.ID), took)
	case j.Status == upgrade.JobFailed:
		reason := j.FailReason
		if reason == "" {
			reason = "no reason given"
		}
		return fmt.Sprintf(":x: %s — job `%s` Failed%s: %s", who, esc(j.ID), took, esc(reason))
	default:
		return fmt.Sprintf(":hourglass: %s — job `%s` stopped being followed after %s (last status %q %s); check the console.",
			who, esc(j.ID), now.Sub(j.SubmittedAt).Round(time.Minute), esc(j.Status), esc(j.Progress))
	}
}

// summaryLines renders the final report: each instance's version before → after.
func summaryLines(r store.Request, jobs []store.Job, after map[string]upgrade.Instance) []string {
	sorted := append([]store.Job(nil), jobs...)
	sort.SliceStable(sorted, func(i, k int) bool { return sorted[i].InstanceName < sorted[k].InstanceName })
	lines := make([]string, 0, len(sorted))
	for _, j := range sorted {
		now := "unknown"
		if inst, ok := after[j.InstanceID]; ok {
			now = versionOf(inst)
		}
		mark := ":white_check_mark:"
		if j.Status != upgrade.JobCompleted {
			mark = ":x:"
		}
		lines = append(lines, fmt.Sprintf("%s *%s* `%s`: %s → %s (%s)", mark, esc(j.InstanceName), esc(j.InstanceID), esc(orDash(j.VersionBefore)), esc(now), esc(orDash(j.Status))))
	}
	return lines
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

// unstartedLines names every instance whose batch answer has no job: those
// whose outcome is unknown first (they may have started; where GeminiDB now
// shows an operation in progress on one, that is said), then those that
// certainly did not start, with the reason.
func unstartedLines(p upgrade.Plan, results []upgrade.UpgradeResult, now map[string]upgrade.Instance) []string {
	names := map[string]string{}
	for _, t := range p.Targets {
		names[t.Instance.ID] = t.Instance.Name
	}
	var unknown, failed []string
	for _, r := range results {
		who := fmt.Sprintf("*%s* `%s`", esc(names[r.InstanceID]), esc(r.InstanceID))
		switch {
		case r.Submitted():
		case unknownOutcome(r):
			line := fmt.Sprintf(":grey_question: %s: outcome unknown (`%s`) — may have started: check the console before retrying.", who, esc(r.ErrorCode))
			if inst, ok := now[r.InstanceID]; ok && inst.Upgrading() {
				line += " GeminiDB now shows an upgrade in progress on it."
			} else if ok && len(inst.Actions) > 0 {
				line += fmt.Sprintf(" GeminiDB now shows `%s` in progress on it.", esc(strings.Join(inst.Actions, ", ")))
			}
			unknown = append(unknown, line)
		default:
			failed = append(failed, fmt.Sprintf(":no_entry_sign: %s: not submitted — `%s` %s", who, esc(r.ErrorCode), esc(r.ErrorMessage)))
		}
	}
	return append(unknown, failed...)
}
