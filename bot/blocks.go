package bot

import (
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/slack-go/slack"

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
	listText        = 7000 // characters of a list in one message; the rest is summarised
	maxMessageChars = 3000
)

// escaper replaces the three characters Slack's mrkdwn treats as control
// characters; built once (a Replacer is safe for concurrent use).
var escaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

// esc escapes the three characters Slack's mrkdwn treats as control characters.
func esc(s string) string { return escaper.Replace(s) }

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

// listSections renders lines as sections holding at most chars characters
// in all; lines that do not fit are counted in a last "… and N more"
// section followed by more (e.g. where to find them).
func listSections(title string, lines []string, chars int, more string) []slack.Block {
	chunks := packLines(title, lines)
	var blocks []slack.Block
	shown, used := 0, 0
	for i, c := range chunks {
		room := chars - used
		if i < len(chunks)-1 {
			room -= len(more) + 40 // room for "… and N more"
		}
		if len(c.text) > room {
			if i == 0 {
				// Not even the first section fits: shorten it.
				blocks = append(blocks, section(truncate(c.text, max(room, 100))))
			}
			return append(blocks, section(fmt.Sprintf("… and %d more%s", len(lines)-shown, more)))
		}
		blocks = append(blocks, section(c.text))
		used += len(c.text)
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
func engineCounts(targets []upgrade.PlanItem) string {
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

// messages splits lines into whole messages (each within the budget of a
// part: partText characters, partBlocks sections), so a long list becomes
// several thread replies and nothing is cut off.
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
	chars  int
}

// messageParts is messages, telling how many lines each message holds.
func messageParts(title string, lines []string) []part {
	var out []part
	for _, c := range packLines(title, lines) {
		if len(out) == 0 || len(out[len(out)-1].blocks) >= partBlocks || out[len(out)-1].chars+len(c.text) > partText {
			out = append(out, part{})
		}
		p := &out[len(out)-1]
		p.blocks = append(p.blocks, section(c.text))
		p.lines += c.lines
		p.chars += len(c.text)
	}
	return out
}
