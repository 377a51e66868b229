package bot

// The channel message of a request: its counts and the plan it carries out.

import (
	"fmt"
	"strings"

	"github.com/slack-go/slack"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/patch"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

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
