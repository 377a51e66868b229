package bot

import (
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/slack-go/slack"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/patch"
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

// kit builds the bot's Block Kit messages. Besides each message's data it
// needs to know only where an instance's page in the cloud console is; the
// zero kit links nothing.
type kit struct {
	console string // BOT_CONSOLE_URL: a template with {region}, {project_id} and {instance_id}; "" = no links
	region  string // replaces {region}; when "" the placeholder stays
	project string // replaces {project_id}
}

// consoleURL is the console page of instance id, or "" when no console is
// configured.
func (k kit) consoleURL(id string) string {
	if k.console == "" || id == "" {
		return ""
	}
	region := "{region}"
	if k.region != "" {
		region = url.PathEscape(k.region)
	}
	return strings.NewReplacer("{instance_id}", url.PathEscape(id), "{project_id}", url.PathEscape(k.project), "{region}", region).Replace(k.console)
}

// name renders an instance's name in bold, linked to its console page when
// one is configured; an instance without a name shows its ID instead.
func (k kit) name(name, id string) string {
	label := esc(name)
	if label == "" {
		label = esc(id)
	}
	if u := k.consoleURL(id); u != "" {
		return "*<" + esc(u) + "|" + label + ">*"
	}
	return "*" + label + "*"
}

// who renders an instance as its name (see name) and its ID: "*name* `id`".
func (k kit) who(name, id string) string {
	if name == "" {
		if k.consoleURL(id) != "" {
			return k.name("", id)
		}
		return "`" + esc(id) + "`"
	}
	return k.name(name, id) + " `" + esc(id) + "`"
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

// engineNames are the engines' product names, as the console shows them.
var engineNames = map[string]string{"cassandra": "Cassandra", "influxdb": "Influx", "redis": "Redis", "mongodb": "MongoDB"}

// engineName returns an engine's product name ("Cassandra" for cassandra);
// an engine it does not know keeps the API's spelling.
func engineName(engine string) string {
	if n, ok := engineNames[strings.ToLower(engine)]; ok {
		return n
	}
	return engine
}

// engineCounts renders "2 Cassandra, 1 Influx" in the order engines first appear.
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
		parts[i] = fmt.Sprintf("%d %s", n[e], esc(engineName(e)))
	}
	return strings.Join(parts, ", ")
}

func plural(n int, word string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, word)
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// outsideWindows renders "1 instance is outside its maintenance window" or
// "2 instances are outside their maintenance windows"; verb is "is" or
// "will be patched".
func outsideWindows(n int, verb string) string {
	if n == 1 {
		return fmt.Sprintf("1 instance %s outside its maintenance window", verb)
	}
	if verb == "is" {
		verb = "are"
	}
	return fmt.Sprintf("%d instances %s outside their maintenance windows", n, verb)
}

// slackDate renders t with Slack's date formatting, so each reader sees it
// in their own time zone ("today 10:15", "Nov 28 10:15"); clients that
// cannot, and notifications, show the UTC fallback.
func slackDate(t time.Time) string {
	return fmt.Sprintf("<!date^%d^{date_short_pretty} {time}|%s>", t.Unix(), t.UTC().Format("2006-01-02 15:04 UTC"))
}

// slackDateSecs is slackDate with seconds, for the start and end of a job.
func slackDateSecs(t time.Time) string {
	return fmt.Sprintf("<!date^%d^{date_short_pretty} {time_secs}|%s>", t.Unix(), t.UTC().Format("2006-01-02 15:04:05 UTC"))
}

// opensIn returns how long after at the maintenance window opens, rounded
// up to the minute, and whether the window is closed at at; false for an
// empty or malformed window, or an open one.
func opensIn(window string, at time.Time) (time.Duration, bool) {
	inWin, err := upgrade.InWindow(window, at)
	if err != nil || inWin {
		return 0, false
	}
	from, _, _ := strings.Cut(strings.TrimSpace(window), "-")
	start, err := time.Parse("15:04", strings.TrimSpace(from))
	if err != nil {
		return 0, false
	}
	u := at.UTC()
	day := time.Date(u.Year(), u.Month(), u.Day(), 0, 0, 0, 0, time.UTC)
	d := day.Add(time.Duration(start.Hour())*time.Hour + time.Duration(start.Minute())*time.Minute).Sub(u)
	if d <= 0 {
		d += 24 * time.Hour
	}
	// Rounded up: "opens in 0m" would be wrong while it is still closed.
	if r := d % time.Minute; r != 0 {
		d += time.Minute - r
	}
	return d, true
}

// shortDuration renders a whole number of minutes as "5h12m", "5h" or "12m".
func shortDuration(d time.Duration) string {
	h, m := int(d/time.Hour), int(d%time.Hour/time.Minute)
	switch {
	case h > 0 && m > 0:
		return fmt.Sprintf("%dh%02dm", h, m)
	case h > 0:
		return fmt.Sprintf("%dh", h)
	}
	return fmt.Sprintf("%dm", m)
}

// windowText renders an instance's maintenance window once, with whether
// it is open at at (the plan's time) or when it opens: "window 02:00-06:00
// UTC, open now", "window 08:00-12:00 UTC, opens in 5h12m". closed tells
// that the window is known and closed at at. A zero at leaves the state out.
func windowText(window string, at time.Time) (text string, closed bool) {
	w := strings.TrimSpace(window)
	if w == "" {
		return "no maintenance window", false
	}
	text = "window " + esc(w) + " UTC"
	if at.IsZero() {
		return text, false
	}
	if d, shut := opensIn(w, at); shut {
		return text + ", opens in " + shortDuration(d), true
	}
	if inWin, err := upgrade.InWindow(w, at); err == nil && inWin {
		return text + ", open now", false
	}
	return text, false
}

// targetLine renders one instance the plan patches: name, ID, engine,
// whole version, status and its window, once; a forced instance outside
// its window is marked.
func (k kit) targetLine(t upgrade.Target, at time.Time) string {
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
			lines[i] = k.targetLine(t, p.CheckedAt)
		}
		blocks = append(blocks, listSections("*Will be patched*", lines, maxListSections, " (the thread lists every instance after confirmation)")...)
	}
	if len(p.Skipped) > 0 {
		lines := make([]string, len(p.Skipped))
		for i, s := range p.Skipped {
			lines[i] = k.skipLine(s, p.CheckedAt)
		}
		blocks = append(blocks, listSections("*Skipped*", lines, 6, "")...)
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
	return []slack.Block{section(text)}
}

// approvalBlocks is kit.approvalBlocks without console links.
func approvalBlocks(r store.Request, p upgrade.Plan, approvers []string) []slack.Block {
	return kit{}.approvalBlocks(r, p, approvers)
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
	blocks = append(blocks, listSections("", lines, maxListSections, "")...)
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
		case patch.UnknownOutcome(r):
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
	Rollout  []string // the waves and how far they got, when there are several
	Status   string   // paused or stopped, and why; "" while it goes on
	CanStop  bool     // show Stop: waves are still to be sent
	Paused   bool     // show Continue
	Target   string   // the GeminiDB target's label; "" when the bot has one target
}

// parentBlocks is kit.parentBlocks without console links.
func parentBlocks(v ParentView) []slack.Block { return kit{}.parentBlocks(v) }

// parentBlocks renders the channel message: who patches how many instances
// of which engine, the --force acknowledgement, and the counts.
func (k kit) parentBlocks(v ParentView) []slack.Block {
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
				names = append(names, k.name(t.Instance.Name, t.Instance.ID))
			}
		}
		list := joinWithin(names, ", ", 1500)
		blocks = append(blocks, section(fmt.Sprintf(":warning: *Forced outside the maintenance window* (--force acknowledged by <@%s>): %s", r.Requester, list)))
	}
	status := "Submitting…"
	if v.Counts != nil {
		status = v.Counts.String()
	}
	blocks = append(blocks, rolloutBlocks(v)...)
	blocks = append(blocks, contextBlock(status+" · details in the thread"))
	return blocks
}

// joinWithin joins items with sep as long as the result stays within max
// bytes, and says how many it left out; an item is never cut (a cut link
// would break the message's markup).
func joinWithin(items []string, sep string, max int) string {
	var b strings.Builder
	for i, it := range items {
		need := len(it)
		if i > 0 {
			need += len(sep)
		}
		if i < len(items)-1 {
			need += len(sep) + len("…and 9999 more") // room to say what is left out
		}
		if b.Len()+need > max {
			if i > 0 {
				b.WriteString(sep)
			}
			fmt.Fprintf(&b, "…and %d more", len(items)-i)
			return b.String()
		}
		if i > 0 {
			b.WriteString(sep)
		}
		b.WriteString(it)
	}
	return b.String()
}

// parentText is the notification text of the parent message.
func parentText(v ParentView) string {
	return fmt.Sprintf("<@%s> is patching %s (request %s)", v.Request.Requester, plural(len(v.Plan.Targets), "GeminiDB instance"), v.Request.ID)
}

// instanceNames maps the plan's instance IDs to their names.
func instanceNames(p upgrade.Plan) map[string]string {
	names := map[string]string{}
	for _, t := range p.Targets {
		names[t.Instance.ID] = t.Instance.Name
	}
	return names
}

// resultLines is kit.resultLines without console links.
func resultLines(p upgrade.Plan, results []upgrade.UpgradeResult) []string {
	return kit{}.resultLines(p, results)
}

// resultLines renders one line per instance of the batch answers: its job
// ID, or its error code and message verbatim and what to do about it.
func (k kit) resultLines(p upgrade.Plan, results []upgrade.UpgradeResult) []string {
	names := instanceNames(p)
	lines := make([]string, len(results))
	for i, r := range results {
		who := k.who(names[r.InstanceID], r.InstanceID)
		switch {
		case r.Submitted():
			lines[i] = fmt.Sprintf(":large_blue_circle: %s — job `%s`", who, esc(r.JobID))
		case patch.UnknownOutcome(r):
			lines[i] = fmt.Sprintf(":grey_question: %s — outcome unknown (`%s`) %s", who, esc(r.ErrorCode), esc(r.ErrorMessage))
		default:
			lines[i] = withHint(fmt.Sprintf(":x: %s — `%s` %s", who, esc(r.ErrorCode), esc(r.ErrorMessage)), r.ErrorCode)
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

// jobLine is kit.jobLine without console links.
func jobLine(j store.Job, now time.Time) string { return kit{}.jobLine(j, now) }

// jobLine renders one finished (or abandoned) job for its thread reply.
func (k kit) jobLine(j store.Job, now time.Time) string {
	who := k.who(j.InstanceName, j.InstanceID)
	switch {
	case j.Status == upgrade.JobCompleted:
		return fmt.Sprintf(":white_check_mark: %s — job `%s` Completed%s.", who, esc(j.ID), took(j))
	case j.Status == upgrade.JobFailed:
		return fmt.Sprintf(":x: %s — job `%s` Failed%s: %s", who, esc(j.ID), took(j), esc(failReason(j)))
	default:
		return fmt.Sprintf(":hourglass_flowing_sand: %s — job `%s` is no longer followed, %s after it was submitted (%s): *it may still be running*; check the console.",
			who, esc(j.ID), ago(now.Sub(j.SubmittedAt)), lastSeen(j))
	}
}

// ago renders how long ago something was: "6h", "5h12m", or "40s" under a minute.
func ago(d time.Duration) string {
	if d < time.Minute {
		return d.Round(time.Second).String()
	}
	return shortDuration(d.Round(time.Minute))
}

// took renders how long a finished job ran, ", took 14s", or "".
func took(j store.Job) string {
	if j.Started.IsZero() || j.Ended.IsZero() {
		return ""
	}
	return ", took " + j.Ended.Sub(j.Started).Round(time.Second).String()
}

func failReason(j store.Job) string {
	if j.FailReason == "" {
		return "no reason given"
	}
	return j.FailReason
}

// lastSeen renders what the bot last read of a job it stopped following.
func lastSeen(j store.Job) string {
	if j.Status == "" {
		return "never read"
	}
	s := "last seen `" + esc(j.Status) + "`"
	if j.Progress != "" {
		s += " " + esc(j.Progress)
	}
	return s
}

// summaryLines is kit.summaryLines without console links.
func summaryLines(r store.Request, jobs []store.Job, after map[string]upgrade.Instance) []string {
	return kit{}.summaryLines(r, jobs, after)
}

// summaryLines renders the final report: each instance's version before →
// after. A job the bot stopped following is not a failure: it may still be
// running, and its line says so.
func (k kit) summaryLines(_ store.Request, jobs []store.Job, after map[string]upgrade.Instance) []string {
	sorted := append([]store.Job(nil), jobs...)
	sort.SliceStable(sorted, func(i, k int) bool { return sorted[i].InstanceName < sorted[k].InstanceName })
	lines := make([]string, 0, len(sorted))
	for _, j := range sorted {
		now := "unknown"
		if inst, ok := after[j.InstanceID]; ok {
			now = patch.VersionOf(inst)
		}
		who := k.who(j.InstanceName, j.InstanceID)
		versions := fmt.Sprintf("%s → %s", esc(orDash(j.VersionBefore)), esc(now))
		switch j.Status {
		case upgrade.JobCompleted:
			lines = append(lines, fmt.Sprintf(":white_check_mark: %s: %s (Completed)", who, versions))
		case upgrade.JobFailed:
			lines = append(lines, fmt.Sprintf(":x: %s: %s (Failed)", who, versions))
		default:
			lines = append(lines, fmt.Sprintf(":hourglass_flowing_sand: %s: %s so far (no longer followed, %s): *may still be running*, check the console", who, versions, lastSeen(j)))
		}
	}
	return lines
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

// unstartedLines is kit.unstartedLines without console links.
func unstartedLines(p upgrade.Plan, results []upgrade.UpgradeResult, now map[string]upgrade.Instance) []string {
	return kit{}.unstartedLines(p, results, now)
}

// unstartedLines names every instance whose batch answer has no job: those
// whose outcome is unknown first (they may have started; where GeminiDB now
// shows an operation in progress on one, that is said), then those that
// certainly did not start, with the reason and what to do.
func (k kit) unstartedLines(p upgrade.Plan, results []upgrade.UpgradeResult, now map[string]upgrade.Instance) []string {
	names := instanceNames(p)
	var unknown, failed []string
	for _, r := range results {
		who := k.who(names[r.InstanceID], r.InstanceID)
		switch {
		case r.Submitted():
		case patch.UnknownOutcome(r):
			line := fmt.Sprintf(":grey_question: %s: outcome unknown (`%s`) — may have started: check the console before retrying.", who, esc(r.ErrorCode))
			if inst, ok := now[r.InstanceID]; ok && inst.Upgrading() {
				line += " GeminiDB now shows an upgrade in progress on it."
			} else if ok && len(inst.Actions) > 0 {
				line += fmt.Sprintf(" GeminiDB now shows `%s` in progress on it.", esc(strings.Join(inst.Actions, ", ")))
			}
			unknown = append(unknown, line)
		default:
			failed = append(failed, withHint(fmt.Sprintf(":no_entry_sign: %s: not submitted — `%s` %s", who, esc(r.ErrorCode), esc(r.ErrorMessage)), r.ErrorCode))
		}
	}
	return append(unknown, failed...)
}

// jobEndsBlocks is kit.jobEndsBlocks without console links.
func jobEndsBlocks(jobs []store.Job, now time.Time) [][]slack.Block {
	return kit{}.jobEndsBlocks(jobs, now)
}

// jobEndsBlocks renders the jobs that ended in one poll as one thread reply
// (more when they do not fit in one): failures first, each with its reason,
// then the jobs the bot stopped following (they may still be running),
// then the completed ones as one compact list of names and durations.
// Each group is sorted by instance name. No jobs, no reply.
func (k kit) jobEndsBlocks(jobs []store.Job, now time.Time) [][]slack.Block {
	if len(jobs) == 0 {
		return nil
	}
	var failed, unfollowed, completed []store.Job
	for _, j := range jobs {
		switch j.Status {
		case upgrade.JobFailed:
			failed = append(failed, j)
		case upgrade.JobCompleted:
			completed = append(completed, j)
		default:
			unfollowed = append(unfollowed, j)
		}
	}
	var counts []string
	var lines []string
	if len(failed) > 0 {
		counts = append(counts, fmt.Sprintf("%d failed", len(failed)))
		for _, j := range byName(failed) {
			lines = append(lines, k.jobLine(j, now))
		}
	}
	if len(unfollowed) > 0 {
		counts = append(counts, fmt.Sprintf("%d no longer followed", len(unfollowed)))
		for _, j := range byName(unfollowed) {
			lines = append(lines, k.jobLine(j, now))
		}
	}
	if len(completed) > 0 {
		counts = append(counts, fmt.Sprintf("%d completed", len(completed)))
		// One short line each, so every job ID stays in the thread (it is
		// what the console searches by).
		lines = append(lines, fmt.Sprintf(":white_check_mark: *Completed* (%d):", len(completed)))
		for _, j := range byName(completed) {
			lines = append(lines, fmt.Sprintf("• %s — job `%s` Completed%s", k.name(j.InstanceName, j.InstanceID), esc(j.ID), took(j)))
		}
	}
	title := fmt.Sprintf("*%s ended:* %s.", plural(len(jobs), "job"), strings.Join(counts, ", "))
	return messages(title, lines)
}

// byName returns jobs sorted by instance name (then job ID).
func byName(jobs []store.Job) []store.Job {
	out := append([]store.Job(nil), jobs...)
	sort.SliceStable(out, func(i, k int) bool {
		if out[i].InstanceName != out[k].InstanceName {
			return out[i].InstanceName < out[k].InstanceName
		}
		return out[i].ID < out[k].ID
	})
	return out
}
