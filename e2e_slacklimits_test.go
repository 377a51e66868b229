package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/config"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// consoleTemplate is a BOT_CONSOLE_URL: every instance name becomes a link.
const consoleTemplate = "https://console.eu-de.otc.t-systems.com/geminidb/?region={region}&project={project_id}#/instance/{instance_id}/overview"

// A 100-instance patch against the strict fake, 10 failures with
// 1,500-character reasons and console links on: every job end is reported
// once, the summary is posted and the channel message shows the end; Slack
// refuses nothing and nothing is rate-limited (the bot paces itself).
func TestHundredInstancesLongReasonsWithConsoleLinks(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *config.Config) { c.ConsoleURL = consoleTemplate; c.FleetGuard = 1000 }) // one wave: the subject is its messages
	insts := h.addInstances("geminidb-cassandra-instance-with-a-rather-long-name", "cassandra", 100)
	id, ts, jobs := h.submitted(insts)
	if len(jobs) != 100 {
		t.Fatalf("%d jobs, want 100", len(jobs))
	}
	reason := strings.Repeat("replica <lag> & node restart timed out; ", 40)[:1500]
	i := 0
	for _, in := range insts {
		if i%10 == 0 {
			h.gdb.FailJob(jobs[in.ID], reason)
		} else {
			h.gdb.CompleteJob(jobs[in.ID], "3.11.3.5")
		}
		i++
	}
	thread := h.threadText(ts, "finished:")
	h.waitParentText(id, "has finished")
	thread = h.threadText(ts)
	for _, j := range jobs {
		if n := strings.Count(thread, "`"+j+"` Completed") + strings.Count(thread, "`"+j+"` Failed"); n != 1 {
			t.Errorf("job %s reported %d times, want once", j, n)
		}
	}
	if n := strings.Count(thread, "finished:"); n != 1 {
		t.Errorf("%d summaries, want 1", n)
	}
	for _, c := range h.slack.Calls() {
		if c.Error != "" {
			t.Errorf("Slack refused %s: %s", c.Method, c.Error)
		}
	}
}

// With Slack's rate limits on, 30 instances ending in three bursts: every
// end is reported exactly once, the summary once, and the channel message
// shows the final state.
func TestThreeBurstsOfEndsUnderRateLimits(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *config.Config) { c.FleetGuard = 1000 }) // one wave: the subject is its job ends
	insts := h.addInstances("db", "cassandra", 30)
	id, ts, jobs := h.submitted(insts)
	for burst := range 3 {
		for _, in := range insts[burst*10 : burst*10+10] {
			h.gdb.CompleteJob(jobs[in.ID], "3.11.3.5")
		}
		h.waitParentText(id, fmt.Sprintf("completed %d", burst*10+10))
	}
	h.waitParentText(id, "has finished")
	thread := h.threadText(ts, "finished:")
	for _, j := range jobs {
		if n := strings.Count(thread, "`"+j+"` Completed"); n != 1 {
			t.Errorf("job %s reported %d times, want once", j, n)
		}
	}
	if n := strings.Count(thread, "finished:"); n != 1 {
		t.Errorf("%d summaries, want 1", n)
	}
}

// Four 429s on the channel-message post after Confirm delay the rollout and
// do not end it: one batch call and a normal thread.
func TestFourRateLimitsAfterConfirm(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	in := h.addInstances("db", "cassandra", 1)[0]
	id, _, ack := h.plan(alice, in.Name)
	h.slack.RateLimit("chat.postMessage", time.Second, 4)
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 0)
	h.threadText(h.parent(id).TS, "1 submitted")
	h.assertBatchCalls(1, "one batch call")
	if ev := h.auditEvents("not_submitted"); len(ev) != 0 {
		t.Errorf("not_submitted audit events = %d, want 0: Slack being busy must not end a rollout", len(ev))
	}
}

// A 429 on the final chat.update is waited out: the channel message ends
// showing the request finished, not "running".
func TestFinalUpdateRateLimitedConverges(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	in := h.addInstances("db", "cassandra", 1)[0]
	id, ts, jobs := h.submitted([]upgrade.Instance{in})
	h.slack.RateLimit("chat.update", time.Second, 4)
	h.gdb.CompleteJob(jobs[in.ID], "3.11.3.5")
	h.threadText(ts, "finished:")
	h.waitParentText(id, "has finished")
}

// status <job-id> answers for a job whose failure reason is 4,000
// characters long (Slack refuses a section over 3,000).
func TestStatusOfJobWithLongFailReason(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	in := h.addInstances("db", "cassandra", 1)[0]
	_, ts, jobs := h.submitted([]upgrade.Instance{in})
	h.gdb.FailJob(jobs[in.ID], strings.Repeat("x<y> & z ", 500)[:4000])
	h.threadText(ts, "finished:")
	ack := h.slash(alice, opsChannel, "status "+jobs[in.ID])
	h.reply(ack.ResponseURL, jobs[in.ID])
	for _, c := range h.slack.Calls() {
		if c.Error != "" {
			t.Errorf("Slack refused %s: %s", c.Method, c.Error)
		}
	}
}

// A thread reply Slack refuses for its content (msg_blocks_too_long) is
// posted again shorter, never unchanged, and the rollout goes on.
func TestRefusedReplyIsShortenedNotRepeated(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	in := h.addInstances("db", "cassandra", 1)[0]
	_, ts, jobs := h.submitted([]upgrade.Instance{in})
	h.slack.FailMethod("chat.postMessage", "msg_blocks_too_long", 1)
	h.gdb.FailJob(jobs[in.ID], "Node restart timed out.")
	h.threadText(ts, "finished:")
	calls := h.slack.CallsTo("chat.postMessage")
	for i, c := range calls {
		if c.Error != "msg_blocks_too_long" {
			continue
		}
		if i+1 == len(calls) {
			t.Fatal("the refused reply was not posted again")
		}
		next := calls[i+1]
		if next.Error != "" || string(next.Blocks) == string(c.Blocks) {
			t.Errorf("after msg_blocks_too_long the bot posted %q (error %q), want the same reply shortened", next.Blocks, next.Error)
		}
		return
	}
	t.Fatal("no call was refused: the test's premise")
}
