package bot

import (
	"fmt"
	"strings"
	"time"

	"github.com/slack-go/slack"

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
	return append(blocks, listSections("", lines, maxListSections, "")...)
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
		line += " — " + esc(j.FailReason)
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
		line += " — " + esc(job.FailReason)
	}
	if !job.Started.IsZero() {
		line += "\nStarted " + slackDateSecs(job.Started)
	}
	if !job.Ended.IsZero() {
		line += ", ended " + slackDateSecs(job.Ended)
	}
	return []slack.Block{section(line)}
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
		lines[i] = fmt.Sprintf("• %s — %s %s, %s, %s", k.who(in.Name, in.ID), esc(engineName(in.Engine)), esc(versionOf(in)), esc(in.Status), window)
	}
	return append(blocks, listSections("", lines, maxListSections, "")...)
}
