package bot

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

// requestStatusBlocks answers "status <request-id>": the request's state,
// its counts, and every instance's job or batch answer.
func (k kit) requestStatusBlocks(r store.Request, p upgrade.Plan, results []upgrade.UpgradeResult, jobs []store.Job) []slack.Block {
	head := fmt.Sprintf("*Request* `%s` by <@%s>: %s", esc(r.ID), r.Requester, esc(string(r.State)))
	if len(results) > 0 {
		head += "\n" + countJobs(results, jobs).String()
	}
	lines := make([]string, 0, len(jobs)+len(results))
	for _, j := range jobs {
		lines = append(lines, k.statusLine(j))
	}
	lines = append(lines, k.unstartedLines(p, results, nil)...)
	blocks := []slack.Block{section(head)}
	return append(blocks, listSections("", lines, listText, " — the request's thread lists every instance")...)
}

// statusLine renders one job of a request for "status".
func (k kit) statusLine(j store.Job) string {
	st := j.Status
	if st == "" {
		st = "submitted"
	}
	mark := "•"
	switch {
	case j.GaveUp:
		mark = ":hourglass_flowing_sand:"
	case j.Status == upgrade.JobCompleted:
		mark = ":white_check_mark:"
	case j.Status == upgrade.JobFailed:
		mark = ":x:"
	}
	line := fmt.Sprintf("%s %s job `%s`: %s", mark, k.who(j.InstanceName, j.InstanceID), esc(j.ID), esc(st))
	if j.Progress != "" && j.Status == upgrade.JobRunning {
		line += " " + esc(j.Progress)
	}
	if j.FailReason != "" {
		line += " — " + esc(truncate(j.FailReason, 1500))
	}
	if j.GaveUp {
		line += " (no longer followed: it may still be running; check the console)"
	}
	return line
}

// jobStatusBlocks answers "status <job-id>" for a job the bot does not
// know, from the jobs API.
func (k kit) jobStatusBlocks(job upgrade.Job) []slack.Block {
	line := fmt.Sprintf("Job `%s` (%s) on %s: *%s*", esc(job.ID), esc(job.Name), k.who(job.InstanceName, job.InstanceID), esc(job.Status))
	if job.Progress != "" {
		line += " " + esc(job.Progress)
	}
	if job.FailReason != "" {
		line += " — " + esc(truncate(job.FailReason, 1500))
	}
	if !job.Started.IsZero() {
		line += "\nStarted " + slackDateSecs(job.Started)
	}
	if !job.Ended.IsZero() {
		line += ", ended " + slackDateSecs(job.Ended)
	}
	return []slack.Block{section(truncate(line, maxSectionChars))}
}

// listBlocks answers "list": the instances with a patch available, each
// with its whole version and its maintenance window as of now.
func (k kit) listBlocks(engines []string, insts []upgrade.Instance, now time.Time) []slack.Block {
	names := make([]string, len(engines))
	for i, e := range engines {
		names[i] = esc(engineName(e))
	}
	head := fmt.Sprintf("*%s with a patch available* (%s)", plural(len(insts), "instance"), strings.Join(names, ", "))
	blocks := []slack.Block{section(head)}
	lines := make([]string, len(insts))
	for i, in := range insts {
		window, _ := windowText(in.MaintenanceWindow, now)
		lines[i] = fmt.Sprintf("• %s — %s %s, %s, %s", k.who(in.Name, in.ID), esc(engineName(in.Engine)), esc(patch.VersionOf(in)), esc(in.Status), window)
	}
	return append(blocks, listSections("", lines, listText, " — `"+esc(commands.Command)+" list <engine>` lists one engine")...)
}

// stateLabel is how history and the App Home name a request's state, with
// its mark; a finished patch with any instance not completed gets ⚠️.
func stateLabel(r store.Request, c *Counts) string {
	switch r.State {
	case store.Planned:
		return ":pencil: *waiting for confirmation*"
	case store.AwaitingApproval:
		return ":raised_hand: *waiting for approval*"
	case store.Approved, store.Submitting:
		return ":wrench: *submitting*"
	case store.Submitted:
		return ":wrench: *running*"
	case store.Done:
		if c != nil && c.Failed+c.NotSubmitted+c.Unknown+c.Unfollowed > 0 {
			return ":warning: *done, not all patched*"
		}
		return ":checkered_flag: *done*"
	case store.Cancelled:
		return ":no_entry_sign: *cancelled*"
	case store.Rejected:
		return ":no_entry: *rejected*"
	case store.Expired:
		return ":hourglass: *expired*"
	case store.Stopped:
		return ":octagonal_sign: *stopped*"
	}
	return "*" + esc(string(r.State)) + "*"
}

// brief renders the counts that are not zero, "2 completed, 1 failed", or "".
func (c Counts) brief() string {
	var parts []string
	add := func(n int, what string) {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, what))
		}
	}
	add(c.Running, "running")
	add(c.Completed, "completed")
	add(c.Failed, "failed")
	add(c.NotSubmitted, "not submitted")
	add(c.Unknown, "unknown")
	add(c.Unfollowed, "no longer followed")
	return strings.Join(parts, ", ")
}

// maxNamed is how many instance names a request's line names.
const maxNamed = 3

// requestLine renders one request for history and the App Home: its state,
// ID, when and by whom, its instances, its counts and a link to its thread;
// where (a channel) when inChannel is set.
func (k kit) requestLine(e requestEntry, inChannel bool) string {
	r, p := e.Request, e.Plan
	line := fmt.Sprintf("%s · `%s` · %s by <@%s>", stateLabel(r, e.Counts), esc(r.ID), slackDate(r.CreatedAt), r.Requester)
	if inChannel && r.Channel != "" {
		line += " in <#" + r.Channel + ">"
	}
	var named []string
	for i, t := range p.Targets {
		if i == maxNamed {
			named = append(named, fmt.Sprintf("%d more", len(p.Targets)-maxNamed))
			break
		}
		named = append(named, k.name(t.Instance.Name, t.Instance.ID))
	}
	what := plural(len(p.Targets), "instance")
	if len(p.Targets) > 0 {
		what += " (" + engineCounts(p.Targets) + "): " + strings.Join(named, ", ")
	}
	line += "\n" + what
	if e.Counts != nil {
		if b := e.Counts.brief(); b != "" {
			line += " · " + b
		}
	}
	switch {
	case e.Link != "" && r.ParentTS != "":
		line += " · <" + esc(e.Link) + "|thread>"
	case e.Link != "":
		line += " · <" + esc(e.Link) + "|approval request>"
	}
	return line
}

// historyBlocks answers "history": the channel's last requests, newest
// first, of one person (user) or naming one instance when given.
func (k kit) historyBlocks(entries []requestEntry, user, instance string) []slack.Block {
	filter := ""
	switch {
	case user != "":
		filter = " by <@" + user + ">"
	case instance != "":
		filter = " naming `" + esc(instance) + "`"
	}
	if len(entries) == 0 {
		return []slack.Block{section(fmt.Sprintf("No patch requests%s in this channel.", filter))}
	}
	head := fmt.Sprintf("*Patch requests%s in this channel*: the last %d, newest first.", filter, len(entries))
	if len(entries) < historySize {
		head = fmt.Sprintf("*Patch requests%s in this channel*: %s, newest first.", filter, plural(len(entries), "request"))
	}
	lines := make([]string, len(entries))
	for i, e := range entries {
		lines[i] = k.requestLine(e, false)
	}
	blocks := []slack.Block{section(head)}
	blocks = append(blocks, listSections("", lines, listText, "")...)
	return append(blocks, contextBlock("Details of one: `"+esc(commands.Command+" status <request-id>")+"`."))
}

// homeFinished is how many finished requests the App Home shows.
const homeFinished = 10

// homeGroupText is the characters one group of the App Home holds.
const homeGroupText = 2800

// homeData is what the App Home shows one person.
type homeData struct {
	User     string
	Allowed  bool           // may use the bot; others see only why not
	Open     []requestEntry // the person's plans waiting for a decision
	Running  []requestEntry // requests being submitted or followed, anyone's
	Finished []requestEntry // the last finished requests, anyone's
}

// homeView renders the App Home tab: the person's open plans, the requests
// running now and the last ones finished, as of now.
func (k kit) homeView(h homeData, now time.Time) slack.HomeTabViewRequest {
	blocks := []slack.Block{
		slack.NewHeaderBlock(plain("GeminiDB patches")),
		contextBlock(fmt.Sprintf("As of %s; refreshed whenever you open this tab.", slackDate(now))),
	}
	if !h.Allowed {
		blocks = append(blocks, section(fmt.Sprintf("You are not allowed to use `%s`: your Slack user is not in BOT_ALLOWED_USERS or its user groups. Ask the bot's admin to add you.", commands.Command)))
		return slack.HomeTabViewRequest{Type: slack.VTHomeTab, Blocks: slack.Blocks{BlockSet: blocks}}
	}
	group := func(title, empty string, entries []requestEntry, more string) {
		blocks = append(blocks, slack.NewDividerBlock())
		if len(entries) == 0 {
			blocks = append(blocks, section(title+"\n"+empty))
			return
		}
		lines := make([]string, len(entries))
		for i, e := range entries {
			lines[i] = k.requestLine(e, true)
			if e.Request.State == store.Planned && !e.Request.ExpiresAt.IsZero() {
				lines[i] += fmt.Sprintf(" · confirm in the channel before %s", slackDate(e.Request.ExpiresAt))
			}
		}
		// Three groups within a message's budget stay far below a view's
		// 100 blocks.
		blocks = append(blocks, listSections(title, lines, homeGroupText, more)...)
	}
	group("*Your open plans*", "_None._ Plan a patch in a channel: `"+esc(commands.Command+" <instance>…")+"`.", h.Open, "")
	group("*Running now*", "_Nothing is being patched._", h.Running, " (see each channel's threads)")
	group(fmt.Sprintf("*Recently finished* (the last %d)", homeFinished), "_Nothing yet._", h.Finished, "")
	blocks = append(blocks, contextBlock("In a channel: `"+commands.Command+" history` lists its last requests; `"+commands.Command+" help` shows every command."))
	return slack.HomeTabViewRequest{Type: slack.VTHomeTab, Blocks: slack.Blocks{BlockSet: blocks}}
}
