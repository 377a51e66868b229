package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/config"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/slacktest"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// submitted plans and confirms a patch of insts and waits for the batch
// results in the thread and the request to count as submitted; it returns the request ID, the parent ts and the
// job ID of each instance.
func (h *harness) submitted(insts []upgrade.Instance) (string, string, map[string]string) {
	h.t.Helper()
	names := make([]string, len(insts))
	for i, in := range insts {
		names[i] = in.Name
	}
	id, _, ack := h.plan(alice, strings.Join(names, " "))
	if id == "" {
		h.t.Fatal("plan has no Confirm button")
	}
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 0)
	ts := h.parent(id).TS
	h.threadText(ts, "Batch results")
	// The answers are in the thread a moment before the request counts as
	// submitted; the channel message's counts show when it does.
	h.waitParentText(id, "running ")
	jobs := map[string]string{}
	for _, in := range insts {
		if js := h.gdb.JobsFor(in.ID); len(js) == 1 {
			jobs[in.ID] = js[0]
		}
	}
	return id, ts, jobs
}

// count returns how many thread messages under ts contain s.
func (h *harness) count(ts, s string) int {
	n := 0
	for _, m := range h.slack.Thread(opsChannel, ts) {
		if strings.Contains(m.AllText(), s) {
			n++
		}
	}
	return n
}

// Jobs that complete and fail are reported once each in the thread, the
// parent's counts follow, and a final summary shows versions before → after.
func TestFollowJobsToTheEnd(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	insts := h.addInstances("db", "cassandra", 3)
	id, ts, jobs := h.submitted(insts)
	if len(jobs) != 3 {
		t.Fatalf("got %d jobs, want 3", len(jobs))
	}
	h.gdb.SetJob(jobs[insts[0].ID], "Running", "42%", "")
	h.gdb.CompleteJob(jobs[insts[0].ID], "3.11.3.5")
	h.gdb.FailJob(jobs[insts[1].ID], "The disk of node 2 is full.")
	h.threadText(ts, jobs[insts[0].ID]+"` Completed", jobs[insts[1].ID]+"` Failed", "The disk of node 2 is full.")
	h.waitParentText(id, "running 1 · completed 1 · failed 1 · not submitted 0")

	h.gdb.CompleteJob(jobs[insts[2].ID], "3.11.3.5")
	summary := h.threadText(ts, "finished", "3.11.3.2 → 3.11.3.5", "<@"+alice+">")
	if !strings.Contains(summary, insts[1].Name) {
		t.Errorf("summary does not list the failed instance %s:\n%s", insts[1].Name, summary)
	}
	h.waitParentText(id, "completed 2 · failed 1")
	h.quiesce()
	for _, in := range insts {
		if n := h.count(ts, jobs[in.ID]+"` Completed") + h.count(ts, jobs[in.ID]+"` Failed"); n != 1 {
			t.Errorf("job of %s reported %d times, want once", in.Name, n)
		}
	}
	if n := h.count(ts, "finished:"); n != 1 {
		t.Errorf("final summary posted %d times, want once", n)
	}
	if got := len(h.auditEvents("job_finished")); got != 3 {
		t.Errorf("job_finished audit events = %d, want 3", got)
	}
}

func (h *harness) waitParentText(id, want string) {
	h.t.Helper()
	var last string
	err := h.slack.WaitFor(h.ctx(), "parent message showing "+want, func(s *slacktest.Server) bool {
		for _, m := range s.Messages(opsChannel) {
			if isParent(m, id) {
				last = m.AllText()
				return strings.Contains(last, want)
			}
		}
		return false
	})
	if err != nil {
		h.t.Fatalf("%v; parent is %q", err, last)
	}
}

// A restart between submit and completion continues in the same thread,
// with no duplicate replies.
func TestRestartContinuesInTheSameThread(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	insts := h.addInstances("db", "influxdb", 2)
	id, ts, jobs := h.submitted(insts)
	h.gdb.CompleteJob(jobs[insts[0].ID], "1.8.10.2")
	h.threadText(ts, jobs[insts[0].ID]+"` Completed")

	h.stop()
	h.gdb.CompleteJob(jobs[insts[1].ID], "1.8.10.2")
	h.start()

	h.threadText(ts, jobs[insts[1].ID]+"` Completed", "finished")
	h.quiesce()
	for _, in := range insts {
		if n := h.count(ts, jobs[in.ID]+"` Completed"); n != 1 {
			t.Errorf("job of %s reported %d times across the restart, want once", in.Name, n)
		}
	}
	if n := h.count(ts, "Batch results"); n != 1 {
		t.Errorf("batch results posted %d times, want once", n)
	}
	if n := h.gdb.Calls("/instances/db-upgrade"); n != 1 {
		t.Errorf("batch endpoint called %d times, want 1", n)
	}
	h.waitParentText(id, "completed 2")
}

// A restart with a job still running picks it up and reports it later.
func TestRestartPicksUpRunningJobs(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	insts := h.addInstances("db", "cassandra", 1)
	_, ts, jobs := h.submitted(insts)
	h.restart()
	h.gdb.FailJob(jobs[insts[0].ID], "Node restart timed out.")
	h.threadText(ts, "Node restart timed out.", "finished")
}

// status answers with where each job is, by request ID and by job ID; a
// request shows every instance's outcome, the cloud's refusals included,
// and only in the request's own channel.
func TestStatusCommand(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	insts := h.addInstances("db", "cassandra", 3)
	h.gdb.SetUpgradeResult(insts[2].ID, "DBS.200011", "The status of DB instance does not allow the operation.")
	id, _, jobs := h.submitted(insts)
	h.gdb.SetJob(jobs[insts[0].ID], "Running", "37%", "")

	ack := h.slash(alice, opsChannel, "status "+id)
	c := h.reply(ack.ResponseURL, jobs[insts[1].ID])
	for _, want := range []string{insts[2].ID, "DBS.200011", "does not allow the operation"} {
		if !strings.Contains(c.AllText(), want) {
			t.Errorf("status of the request lacks %q:\n%s", want, c.AllText())
		}
	}
	ack = h.slash(alice, "COTHER", "status "+id)
	c = h.reply(ack.ResponseURL, "belongs to another channel")
	if strings.Contains(c.AllText(), insts[0].ID) {
		t.Errorf("status in another channel shows the request's instances: %s", c.AllText())
	}

	ack = h.slash(alice, opsChannel, "status "+jobs[insts[0].ID])
	c = h.reply(ack.ResponseURL, "Running")
	if !strings.Contains(c.AllText(), "37%") {
		t.Errorf("job status = %q, want progress 37%%", c.AllText())
	}

	ack = h.slash(alice, opsChannel, "status 00000000-0000-0000-0000-000000000000")
	h.reply(ack.ResponseURL, "No request or job")
}

// A job followed longer than BOT_FOLLOW_FOR is given up, and the thread
// says so: not as a failure (it may still be running), in its reply and in
// the summary.
func TestStopFollowingAfterBound(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *config.Config) { c.FollowFor = 300 * time.Millisecond })
	insts := h.addInstances("db", "cassandra", 1)
	_, ts, _ := h.submitted(insts)
	thread := h.threadText(ts, "is no longer followed", "finished", "no longer followed 1")
	if strings.Contains(thread, ":x:") || strings.Count(thread, "may still be running") < 2 {
		t.Errorf("an unfollowed job reads like a failure, or the reply and summary do not say it may still be running:\n%s", thread)
	}
}

// A corrupted store stops the bot at start with a clear error, and the file
// is left as it was.
func TestCorruptedStoreStopsTheBot(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.stop()
	path := h.cfg.Store
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	damaged := raw[:len(raw)/2]
	if err := os.WriteFile(path, damaged, 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), nil, withConfig(h.cfg), &stdout, &stderr)
	if code == 0 {
		t.Fatalf("run with a damaged store exited 0, want failure")
	}
	if !strings.Contains(stderr.String(), "store") {
		t.Errorf("error output %q does not mention the store", stderr.String())
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(after, damaged) {
		t.Error("the damaged store file was modified")
	}
	if _, err := store.Open(path); err == nil {
		t.Error("store.Open accepted the damaged file")
	}
}

// A process that died in the middle of submitting: batches whose answers
// were recorded are followed as usual; the batch that was in flight is
// reported as unknown (it may have started) and never retried; a batch
// never sent is reported as not sent, never as unknown.
func TestRestartWhileSubmitting(t *testing.T) {
	for _, tc := range []struct {
		name     string
		inFlight bool
		want     []string // in the thread, for the second instance
		wantNot  string
	}{
		{"died during the call", true, []string{"outcome unknown", "may have started", "not* retried"}, "NOT_SENT"},
		{"died before the call", false, []string{"NOT_SENT", "nothing was started"}, "outcome unknown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, nil)
			insts := h.addInstances("db", "cassandra", 2)
			// The second instance gets no job, so the store can be rewound to a
			// state a crash between two batches leaves: one answer and its job
			// recorded, nothing for the other instance.
			h.gdb.SetUpgradeResult(insts[1].ID, "DBS.200011", "The status of DB instance does not allow the operation.")
			id, ts, jobs := h.submitted(insts)
			h.stop()
			h.rewindToSubmitting(id, 1, tc.inFlight, insts[1].ID)

			h.start()
			thread := h.threadText(ts, append([]string{"stopped while submitting", insts[1].ID}, tc.want...)...)
			after := strings.SplitAfter(thread, "stopped while submitting")[1]
			for _, line := range strings.Split(after, "\n") {
				if strings.Contains(line, insts[0].ID) && strings.Contains(line, "unknown") {
					t.Errorf("%s, whose answer was recorded, is reported as unknown: %s", insts[0].Name, line)
				}
			}
			if strings.Contains(after, tc.wantNot) {
				t.Errorf("the recovery says %q:\n%s", tc.wantNot, after)
			}
			h.gdb.CompleteJob(jobs[insts[0].ID], "3.11.3.5")
			h.threadText(ts, jobs[insts[0].ID]+"` Completed", "finished")
			h.assertBatchCalls(1, "a batch call is never retried after a restart")
		})
	}
}

// rewindToSubmitting rewrites the stopped bot's store to "submitting, only
// the first keep answers recorded, its submitter gone", as if the process
// had died before the next batch's answer was written; inFlight says
// whether that batch (the instances ids) was being sent at the time.
func (h *harness) rewindToSubmitting(id string, keep int, inFlight bool, ids ...string) {
	h.t.Helper()
	st, err := store.Open(h.cfg.Store)
	if err != nil {
		h.t.Fatal(err)
	}
	_, err = st.Update(h.t.Context(), id, func(r *store.Request) error {
		var results []upgrade.UpgradeResult
		if err := json.Unmarshal(r.Results, &results); err != nil {
			return err
		}
		r.Results, err = json.Marshal(results[:keep])
		r.LeaseUntil = time.Now().Add(-time.Second)             // its submitter is gone
		r.InFlight, r.Posted, r.ResultsPending = nil, nil, true // nothing was in the thread yet
		if inFlight {
			r.InFlight = ids
		}
		if err != nil {
			return err
		}
		// The wave is being sent again: started, not ended.
		var ro map[string]any
		if err := json.Unmarshal(r.Rollout, &ro); err != nil {
			return err
		}
		for _, w := range ro["waves"].([]any) {
			delete(w.(map[string]any), "ended")
		}
		delete(ro, "finished")
		r.Rollout, err = json.Marshal(ro)
		return err
	})
	if err == nil {
		_, err = st.Transition(h.t.Context(), id, []store.State{store.Submitted, store.Done}, store.Submitting, "", nil)
	}
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		h.t.Fatal(err)
	}
}

// A finished request older than BOT_RETENTION is deleted with its jobs by
// the housekeeping, and status then says why it is not known.
func TestRetentionDeletesOldRequests(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *config.Config) { c.Retention = 24 * time.Hour })
	insts := h.addInstances("db", "cassandra", 2)
	id, ts, jobs := h.submitted(insts[:1])
	h.gdb.CompleteJob(jobs[insts[0].ID], "3.11.3.5")
	h.threadText(ts, "finished")
	h.waitParentText(id, "has finished") // the paced final update is out too
	h.quiesce()                          // the summary is out and the request finished
	if n := len(h.auditEvents("done")); n != 1 {
		t.Fatalf("%d done audit events, want 1", n)
	}
	// Two days on, in two steps: a write about the finished request that
	// is still under way when the clock first moves (a paced Slack update
	// recording its outcome) dates it a day later, and it must go all
	// the same.
	for range 2 {
		h.clock.Advance(25 * time.Hour)
		h.quiesce() // two housekeeping ticks on
	}
	ack := h.slash(alice, opsChannel, "status "+id)
	h.reply(ack.ResponseURL, "Finished requests are deleted 1 day")
	open, _, _ := h.plan(alice, insts[1].Name) // expires with the clock, but too recently to be deleted
	h.clock.Advance(25 * time.Hour)
	h.quiesce()
	if n := len(h.auditEvents("done")); n != 1 {
		t.Errorf("done audit events = %d, want 1 (the audit log is the permanent record)", n)
	}
	h.click(alice, "patch_cancel", open, "", 0)
	h.ephemeralTo(alice, "`"+open+"` has expired")
}
