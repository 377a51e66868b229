package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/slacktest"
)

// 25 named instances with --wave-size 5 --max-errors 1, above
// BOT_FLEET_GUARD: a canary of 1 goes first by itself, then waves of at
// most 5, each only once every job of the one before it ended; the first
// failure is within the budget and the rollout goes on, the second pauses
// it and nothing more is sent until Continue.
func TestWavesAndErrorBudget(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	insts := h.addInstances("fleet", "cassandra", 25)
	_, plan, _ := h.plan(alice, names(insts)+" --wave-size 5 --max-errors 1 --dry-run")
	if text := plan.AllText(); !strings.Contains(text, "canary of 1 instance first") || !strings.Contains(text, "24 instances in 5 waves of at most 5") {
		t.Errorf("the plan does not show the canary and the waves:\n%s", text)
	}
	id, ts := h.confirmed(names(insts) + " --wave-size 5 --max-errors 1")
	h.waitBatches(1)
	calls := h.gdb.BatchCalls()
	if len(calls[0]) != 1 {
		t.Fatalf("first batch call = %v, want a canary of 1", calls[0])
	}
	h.waitParentText(id, "wave 1 of 6, canary: 1 instance")
	h.assertBatchCalls(1, "the waves wait for the canary")

	sent := map[string]bool{}
	byID := map[string]int{}
	for i, in := range insts {
		byID[in.ID] = i
	}
	complete := func(ids []string, except ...string) {
		for _, id := range ids {
			if !slices.Contains(except, id) {
				h.gdb.CompleteJob(h.onlyJob(insts[byID[id]]), "3.11.3.5")
			}
		}
	}
	complete(calls[0])
	h.waitBatches(2)
	calls = h.gdb.BatchCalls()
	wave2 := calls[1]
	if len(wave2) != 5 {
		t.Fatalf("wave 2 = %v, want 5 instances", wave2)
	}
	h.waitParentText(id, "wave 2 of 6: 5 instances")
	h.assertBatchCalls(2, "wave 3 waits for wave 2's jobs")

	// One failure (within --max-errors 1) and one job still running: wave 3
	// waits for that job.
	h.gdb.FailJob(h.onlyJob(insts[byID[wave2[0]]]), "Disk full.")
	complete(wave2[1:4])
	h.threadText(ts, "Disk full")
	h.assertBatchCalls(2, "a job of wave 2 is still running")
	complete(wave2[4:])
	h.waitBatches(3)
	wave3 := h.gdb.BatchCalls()[2]
	if len(wave3) != 5 {
		t.Fatalf("wave 3 = %v, want 5 instances", wave3)
	}
	h.waitParentText(id, "errors: 1 of 1 allowed")

	// The second failure pauses the rollout.
	h.gdb.FailJob(h.onlyJob(insts[byID[wave3[0]]]), "Node 3 did not rejoin.")
	complete(wave3[1:])
	h.threadText(ts, "is paused", "more than --max-errors 1 allows")
	h.waitParentText(id, "Continue sends the rest")
	h.assertBatchCalls(3, "nothing is sent while paused")

	h.threadClick(alice, "patch_continue", id, 0)
	h.waitBatches(4)
	wave4 := h.gdb.BatchCalls()[3]
	if len(wave4) != 5 {
		t.Fatalf("wave 4 = %v, want 5 instances", wave4)
	}
	h.waitParentText(id, "wave 4 of 6: 5 instances")
	complete(wave4)
	h.waitBatches(5)
	complete(h.gdb.BatchCalls()[4])
	h.waitBatches(6)
	last := h.gdb.BatchCalls()[5]
	if len(last) != 4 {
		t.Fatalf("wave 6 = %v, want the last 4 instances", last)
	}
	complete(last)
	h.threadText(ts, "finished")
	for _, c := range h.gdb.BatchCalls() {
		for _, id := range c {
			if sent[id] {
				t.Errorf("instance %s sent twice", id)
			}
			sent[id] = true
		}
	}
	if len(sent) != 25 {
		t.Errorf("%d instances sent, want 25", len(sent))
	}
	h.assertBatchCalls(6, "one call per wave")
}

// waitBatches waits until the fake GeminiDB recorded n batch calls' IDs
// (Calls counts a call when it arrives, BatchCalls once it is handled).
func (h *harness) waitBatches(n int) {
	h.t.Helper()
	h.waitBatchCalls(n)
	if err := h.slack.WaitFor(h.ctx(), "batch calls recorded", func(*slacktest.Server) bool {
		return len(h.gdb.BatchCalls()) >= n
	}); err != nil {
		h.t.Fatalf("%v (got %d, want %d)", err, len(h.gdb.BatchCalls()), n)
	}
}
