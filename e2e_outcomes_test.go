package main

import (
	"strings"
	"testing"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// A batch call answered 504 APIG.0201 after GeminiDB started the jobs is
// unknown: the thread shows the code and message and never says "not
// submitted" of it (issue 19).
func TestBackendTimeoutIsUnknown(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	insts := h.addInstances("db", "cassandra", 2)
	h.gdb.FailNextAfter("/instances/db-upgrade", 504, "APIG.0201", "Backend timeout.", 1)
	_, ts := h.confirmed(names(insts))
	thread := h.threadText(ts, "APIG.0201", "Backend timeout.")
	if strings.Contains(thread, "0 submitted, 2 not submitted") || strings.Contains(thread, "not submitted 2") {
		t.Errorf("the thread counts instances whose patch may have started as not submitted:\n%s", thread)
	}
	if !strings.Contains(thread, "may have started") {
		t.Errorf("the thread does not say the patch may have started:\n%s", thread)
	}
	h.assertBatchCalls(1, "never retried")
}

// A 202 answering [{X, job-1}, {X, DBS.200011 …}, {Y-not-sent, job-2}]
// keeps job-1 (followed to its end) and names the row for the instance
// that was not sent (issue 19).
func TestDuplicatedRowKeepsItsJob(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	insts := h.addInstances("db", "cassandra", 1)
	x := insts[0]
	h.gdb.RewriteNextBatch(func(rows []upgrade.UpgradeResult, _ func(string) string) []upgrade.UpgradeResult {
		return append(rows,
			upgrade.UpgradeResult{InstanceID: x.ID, ErrorCode: "DBS.200011", ErrorMessage: "The instance is being upgraded."},
			upgrade.UpgradeResult{InstanceID: "ghost-instance", ErrorCode: "DBS.200019", ErrorMessage: "Instance not found."})
	})
	_, ts := h.confirmed(x.Name)
	thread := h.threadText(ts, "Batch results", "ghost-instance")
	if !strings.Contains(thread, "1 submitted") {
		t.Errorf("the duplicated row lost the job:\n%s", thread)
	}
	h.gdb.CompleteJob(h.onlyJob(x), "3.11.3.5")
	h.threadText(ts, "finished", "completed 1")
	if !strings.Contains(h.logs.String(), "not sent") {
		t.Errorf("the unexpected row was not logged")
	}
}
