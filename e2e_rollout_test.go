package main

import (
	"strings"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/config"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/slacktest"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store/storetest"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// names joins the names of insts for a command.
func names(insts []upgrade.Instance) string {
	out := make([]string, len(insts))
	for i, in := range insts {
		out[i] = in.Name
	}
	return strings.Join(out, " ")
}

// confirmed plans text, confirms it and returns the request ID and the
// channel message's ts.
func (h *harness) confirmed(text string) (string, string) {
	h.t.Helper()
	id, plan, ack := h.plan(alice, text)
	if id == "" {
		h.t.Fatalf("plan has no Confirm button:\n%s", plan.AllText())
	}
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 0)
	return id, h.parent(id).TS
}

// waitBatchCalls waits until the batch endpoint was called n times.
func (h *harness) waitBatchCalls(n int) {
	h.t.Helper()
	if err := h.slack.WaitFor(h.ctx(), "batch calls", func(*slacktest.Server) bool {
		return h.gdb.Calls("/instances/db-upgrade") >= n
	}); err != nil {
		h.t.Fatalf("%v (got %d, want %d)\nlogs:\n%s", err, h.gdb.Calls("/instances/db-upgrade"), n, h.logs.String())
	}
}

// onlyJob returns the one job of instance in.
func (h *harness) onlyJob(in upgrade.Instance) string {
	h.t.Helper()
	js := h.gdb.JobsFor(in.ID)
	if len(js) != 1 {
		h.t.Fatalf("instance %s has %d jobs, want 1", in.Name, len(js))
	}
	return js[0]
}

// threadClick presses a button of a message in the request's thread or
// channel message as user.
func (h *harness) threadClick(user, action, id string, retry int) {
	h.t.Helper()
	h.click(user, action, id, h.slack.NewResponseURL(opsChannel, ""), retry)
}

// --canary 1: the canary goes alone; once its job Completed, the rest goes
// by itself, once, and the summary offers no Retry.
func TestCanaryThenTheRest(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	insts := h.addInstances("db", "cassandra", 3)
	_, plan, _ := h.plan(alice, names(insts)+" --canary 1 --dry-run")
	if !strings.Contains(plan.AllText(), "canary: 1 instance first") {
		t.Errorf("the plan does not show the waves:\n%s", plan.AllText())
	}
	id, ts := h.confirmed(names(insts) + " --canary 1")
	h.waitBatchCalls(1)
	if calls := h.gdb.BatchCalls(); len(calls[0]) != 1 || calls[0][0] != insts[0].ID {
		t.Fatalf("first batch call = %v, want the canary %s alone", calls, insts[0].ID)
	}
	h.threadText(ts, "Batch results")
	h.assertBatchCalls(1, "the rest waits for the canary")
	h.gdb.CompleteJob(h.onlyJob(insts[0]), "3.11.3.5")
	h.waitBatchCalls(2)
	h.threadText(ts, "Batch results of wave 2")
	for _, in := range insts[1:] {
		h.gdb.CompleteJob(h.onlyJob(in), "3.11.3.5")
	}
	summary := h.threadText(ts, "finished")
	if strings.Contains(summary, "Retry") {
		t.Errorf("a summary with every instance patched offers Retry:\n%s", summary)
	}
	h.waitParentText(id, "completed 3")
	h.assertBatchCalls(2, "one call for the canary, one for the rest")
}

// A failed canary pauses the request; Stop ends it and nothing more is
// sent; the summary names what was not sent and offers Retry.
func TestFailedCanaryThenStop(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	insts := h.addInstances("db", "cassandra", 3)
	id, ts := h.confirmed(names(insts) + " --canary 1")
	h.waitBatchCalls(1)
	h.threadText(ts, "Batch results")
	h.gdb.FailJob(h.onlyJob(insts[0]), "Node 2 did not rejoin.")
	h.threadText(ts, "is paused", "Node 2 did not rejoin")
	h.threadClick(bob, "patch_stop", id, 0)
	h.ephemeralTo(bob, "Only <@"+alice+">")
	h.threadClick(alice, "patch_stop", id, 0)
	summary := h.threadText(ts, "stopped request", "Not sent (2)", "finished", "Stopped by <@"+alice+">", "Retry 3 instances")
	for _, in := range insts[1:] {
		if !strings.Contains(summary, in.ID) {
			t.Errorf("the thread does not name %s, which was not sent:\n%s", in.Name, summary)
		}
	}
	h.assertBatchCalls(1, "nothing is sent after Stop")
	if n := len(h.auditEvents("stopped")); n != 1 {
		t.Errorf("stopped audit events = %d, want 1", n)
	}
}

// Continue after a failed canary sends the rest exactly once, however many
// times it is pressed or redelivered.
func TestFailedCanaryThenContinueTwice(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	insts := h.addInstances("db", "cassandra", 3)
	id, ts := h.confirmed(names(insts) + " --canary 1")
	h.waitBatchCalls(1)
	h.threadText(ts, "Batch results")
	h.gdb.FailJob(h.onlyJob(insts[0]), "Node 2 did not rejoin.")
	h.threadText(ts, "is paused")
	h.threadClick(alice, "patch_continue", id, 0)
	h.threadClick(alice, "patch_continue", id, 1) // Slack's redelivery
	h.threadClick(alice, "patch_continue", id, 0) // a second click
	h.waitBatchCalls(2)
	h.threadText(ts, "continued request", "Batch results of wave 2")
	h.assertBatchCalls(2, "Continue sends the rest once")
	if calls := h.gdb.BatchCalls(); len(calls[1]) != 2 {
		t.Errorf("second batch call = %v, want the two other instances", calls[1])
	}
	if n := len(h.auditEvents("continued")); n != 1 {
		t.Errorf("continued audit events = %d, want 1", n)
	}
}

// --wait-for-window: an instance outside its window is scheduled, shown in
// the channel message, and sent when its window opens, once.
func TestWaitForWindow(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	insts := h.addInstances("db", "cassandra", 2)
	now, later := insts[0], insts[1]
	h.gdb.SetInstance(later.ID, func(in *upgrade.Instance) { in.MaintenanceWindow = window(2, 2) })
	_, plan, _ := h.plan(alice, names(insts)+" --dry-run --wait-for-window")
	if !strings.Contains(plan.AllText(), "scheduled for") {
		t.Errorf("the plan does not show the scheduled instance:\n%s", plan.AllText())
	}
	id, ts := h.confirmed(names(insts) + " --wait-for-window")
	h.waitBatchCalls(1)
	h.threadText(ts, "Batch results")
	h.waitParentText(id, "scheduled for")
	h.assertBatchCalls(1, "the window is closed")
	h.clock.Advance(2 * time.Hour)
	h.waitBatchCalls(2)
	if calls := h.gdb.BatchCalls(); len(calls[1]) != 1 || calls[1][0] != later.ID {
		t.Errorf("second batch call = %v, want %s once its window opened", calls, later.Name)
	}
	h.gdb.CompleteJob(h.onlyJob(now), "3.11.3.5")
	h.gdb.CompleteJob(h.onlyJob(later), "3.11.3.5")
	h.threadText(ts, "finished")
	h.assertBatchCalls(2, "each instance once")
}

// Retry on a summary builds a fresh plan of just the instances that were
// not patched, shown to the clicker, who becomes its requester.
func TestRetryWhatFailed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	insts := h.addInstances("db", "cassandra", 2)
	id, ts := h.confirmed(names(insts))
	h.threadText(ts, "Batch results")
	h.gdb.CompleteJob(h.onlyJob(insts[0]), "3.11.3.5")
	h.gdb.FailJob(h.onlyJob(insts[1]), "Disk full.")
	h.threadText(ts, "finished", "Retry 1 instance")
	url := h.slack.NewResponseURL(opsChannel, "")
	h.click(bob, "patch_retry", id, url, 0)
	c := h.reply(url, "patch plan")
	text := c.AllText()
	if !strings.Contains(text, "Retry of `"+id+"`") || !strings.Contains(text, insts[1].Name) || strings.Contains(text, insts[0].Name) {
		t.Errorf("the retry plan is not of just the failed instance:\n%s", text)
	}
	retry := buttonValue(c.Blocks, "patch_confirm")
	h.click(bob, "patch_confirm", retry, url, 0)
	h.threadText(h.parent(retry).TS, "Batch results")
	if calls := h.gdb.BatchCalls(); len(calls) != 2 || len(calls[1]) != 1 || calls[1][0] != insts[1].ID {
		t.Errorf("batch calls = %v, want the retry to send %s alone", calls, insts[1].Name)
	}
}

// A restart while paused and while scheduled resumes the rollout: Continue
// still works, the scheduled wave still goes when its window opens, and
// nothing is sent twice.
func TestRestartMidRollout(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	insts := h.addInstances("db", "cassandra", 3)
	h.gdb.SetInstance(insts[2].ID, func(in *upgrade.Instance) { in.MaintenanceWindow = window(2, 2) })
	id, ts := h.confirmed(names(insts) + " --canary 1 --wait-for-window")
	h.waitBatchCalls(1)
	h.threadText(ts, "Batch results")
	h.gdb.FailJob(h.onlyJob(insts[0]), "Node 2 did not rejoin.")
	h.threadText(ts, "is paused")
	h.restart()
	h.threadClick(alice, "patch_continue", id, 0)
	h.waitBatchCalls(2)
	h.threadText(ts, "Batch results of wave 2")
	h.restart()
	h.assertBatchCalls(2, "the last wave waits for its window across a restart")
	h.clock.Advance(2 * time.Hour)
	h.waitBatchCalls(3)
	h.restart()
	h.assertBatchCalls(3, "each wave once")
	got := map[string]int{}
	for _, call := range h.gdb.BatchCalls() {
		for _, in := range call {
			got[in]++
		}
	}
	for _, in := range insts {
		if got[in.ID] != 1 {
			t.Errorf("%s sent %d times, want once", in.Name, got[in.ID])
		}
	}
}

// Two replicas on one Redis: the rest after a canary is sent once.
func TestRolloutOnTwoReplicas(t *testing.T) {
	t.Parallel()
	addr := storetest.StartRedis(t)
	h := newHarness(t, func(c *config.Config) {
		c.Store = "redis://" + addr + "/0"
	}, slacktest.WithRoundRobin())
	h.startReplica()
	insts := h.addInstances("db", "cassandra", 4)
	_, ts := h.confirmed(names(insts) + " --canary 2")
	h.waitBatchCalls(1)
	h.threadText(ts, "Batch results")
	h.gdb.CompleteJob(h.onlyJob(insts[0]), "3.11.3.5")
	h.gdb.CompleteJob(h.onlyJob(insts[1]), "3.11.3.5")
	h.waitBatchCalls(2)
	h.assertBatchCalls(2, "two replicas, one wave each")
	h.threadText(ts, "Batch results of wave 2")
	if n := h.count(ts, "Batch results of wave 2"); n != 1 {
		t.Errorf("the second wave's answers were posted %d times, want once", n)
	}
}

// With approvals on, the approval covers the whole rollout, and Continue
// after a failed canary needs an approver who is not the requester.
func TestContinueNeedsAnApprover(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *config.Config) { c.Approvers = []string{bob} })
	insts := h.addInstances("db", "cassandra", 2)
	id, _, ack := h.plan(alice, names(insts)+" --canary 1")
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 0)
	h.approvalMessage(id)
	h.approvalClick(bob, "patch_approve", id, 0)
	ts := h.parent(id).TS
	h.waitBatchCalls(1)
	h.threadText(ts, "Batch results")
	h.gdb.FailJob(h.onlyJob(insts[0]), "Node 2 did not rejoin.")
	h.threadText(ts, "is paused", "<@"+bob+">")
	h.threadClick(alice, "patch_continue", id, 0)
	h.ephemeralTo(alice, "cannot continue your own request")
	h.assertBatchCalls(1, "the requester cannot continue when approvals are on")
	h.threadClick(bob, "patch_continue", id, 0)
	h.waitBatchCalls(2)
	h.threadText(ts, "<@"+bob+"> continued")
}
