package bot

// The thread replies of a request: batch answers, job ends and the final summary.

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/slack-go/slack"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/patch"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// instanceNames maps the plan's instance IDs to their names.
func instanceNames(p upgrade.Plan) map[string]string {
	names := map[string]string{}
	for _, t := range p.Targets {
		names[t.Instance.ID] = t.Instance.Name
	}
	return names
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

// jobLine renders one finished (or abandoned) job for its thread reply.
func (k kit) jobLine(j store.Job, now time.Time) string {
	who := k.who(j.InstanceName, j.InstanceID)
	switch {
	case j.Status == upgrade.JobCompleted:
		return fmt.Sprintf(":white_check_mark: %s — job `%s` Completed%s.", who, esc(j.ID), took(j))
	case j.Status == upgrade.JobFailed:
		return fmt.Sprintf(":x: %s — job `%s` Failed%s: %s", who, esc(j.ID), took(j), esc(truncate(failReason(j), 1500)))
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
