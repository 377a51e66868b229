package patch

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// TestTransitionsTable checks the table's shape: final states go nowhere,
// every other state leads somewhere, and every state is reachable from
// planned.
func TestTransitionsTable(t *testing.T) {
	t.Parallel()
	all := []store.State{store.Planned, store.AwaitingApproval, store.Approved, store.Submitting, store.Submitted,
		store.Paused, store.Done, store.Cancelled, store.Rejected, store.Expired, store.Stopped}
	for _, s := range all {
		if got := len(transitions[s]) == 0; got != s.Final() {
			t.Errorf("state %s: has no moves %v, want %v (final %v)", s, got, s.Final(), s.Final())
		}
	}
	reached := map[store.State]bool{store.Planned: true, store.Approved: true} // approved only from older versions
	for changed := true; changed; {
		changed = false
		for from, tos := range transitions {
			for _, to := range tos {
				if reached[from] && !reached[to] {
					reached[to], changed = true, true
				}
			}
		}
	}
	for _, s := range all {
		if !reached[s] {
			t.Errorf("state %s cannot be reached from planned", s)
		}
	}
	if !Allowed(store.Paused, store.Submitted) || Allowed(store.Paused, store.Submitting) || Allowed(store.Done, store.Submitted) {
		t.Errorf("Allowed disagrees with the table")
	}
}

// TestIllegalMove: a move outside the table is refused before the store is
// asked.
func TestIllegalMove(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		l, st, _ := newLife(t)
		create(t, l, "r-1", Options{}, inst("a", "cassandra", ""))
		_, err := l.move(t.Context(), "jump", "r-1", []store.State{store.Planned}, store.Done, "U1", nil)
		var ie *IllegalMoveError
		if !errors.As(err, &ie) || ie.To != store.Done || errors.Is(err, store.ErrConflict) {
			t.Fatalf("got error %v, want an *IllegalMoveError that is not a conflict", err)
		}
		if r, _ := st.Get(t.Context(), "r-1"); r.State != store.Planned {
			t.Errorf("got state %s, want planned", r.State)
		}
	})
}

// TestConfirmSendFinish is the plain life: confirm, send the one wave,
// follow its jobs, finish.
func TestConfirmSendFinish(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		l, st, _ := newLife(t)
		create(t, l, "r-1", Options{}, inst("a", "cassandra", ""), inst("b", "influxdb", ""))
		r, s, err := l.Confirm(t.Context(), "r-1", "U1")
		if err != nil {
			t.Fatalf("Confirm: got error %v, want nil", err)
		}
		if r.State != store.Submitting || s.Wave != 0 || len(s.Batches) != 2 || r.Owner != s.Claim.Token || !r.ResultsPending {
			t.Fatalf("Confirm: got %+v and %+v, want submitting, wave 0 of 2 batches claimed", r, s)
		}
		if _, _, err := l.Confirm(t.Context(), "r-1", "U1"); !isConflict(err, store.Submitting) {
			t.Errorf("second Confirm: got error %v, want a conflict (submitting)", err)
		}
		if step := next(t, st, "r-1"); step.Action != ActionWait || !step.Until.Equal(s.Claim.Until) {
			t.Errorf("Next while sending: got %+v, want wait until the lease ends", step)
		}
		r = send(t, l, st, s, nil)
		if r.State != store.Submitted || r.Owner != "" || len(r.InFlight) != 0 {
			t.Fatalf("after EndSend: got %+v, want submitted, claim given up", r)
		}
		if step := next(t, st, "r-1"); step.Action != ActionWait || step.Why != "jobs are running" {
			t.Errorf("Next with running jobs: got %+v, want wait", step)
		}
		if _, err := l.Finish(t.Context(), "r-1"); !isRefused(err) {
			t.Errorf("Finish with running jobs: got error %v, want a refusal", err)
		}
		endJob(t, st, "job-a", upgrade.JobCompleted)
		endJob(t, st, "job-b", upgrade.JobFailed)
		if step := next(t, st, "r-1"); step.Action != ActionFinish {
			t.Errorf("Next with every job ended: got %+v, want finish", step)
		}
		if r, err = l.Finish(t.Context(), "r-1"); err != nil || r.State != store.Done {
			t.Fatalf("Finish: got %s, error %v; want done", r.State, err)
		}
		if _, err := l.Finish(t.Context(), "r-1"); !isConflict(err, store.Done) {
			t.Errorf("second Finish: got error %v, want a conflict (done)", err)
		}
		if step := next(t, st, "r-1"); step.Action != ActionNone {
			t.Errorf("Next when done: got %+v, want none", step)
		}
		_, ro := rollout(t, st, "r-1")
		if ro.Finished == nil || ro.Waves[0].Started.IsZero() || ro.Waves[0].Ended.IsZero() || ro.Waves[0].By != "U1" {
			t.Errorf("got rollout %+v, want the wave started by U1, ended, and the request finished", ro)
		}
		var results []upgrade.UpgradeResult
		if _, all, err := answered(r); err != nil || len(all) != 2 {
			t.Errorf("got answers %+v (error %v), want 2", results, err)
		}
	})
}

// TestApprovalAndEndings covers the moves before submitting.
func TestApprovalAndEndings(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		l, st, _ := newLife(t)
		a := inst("a", "cassandra", "")
		for _, id := range []string{"r-1", "r-2", "r-3", "r-4"} {
			create(t, l, id, Options{}, a)
		}
		// Approval: requested, reopened when it could not be posted, asked
		// again, approved by an approver.
		if r, err := l.RequestApproval(t.Context(), "r-1", "U1"); err != nil || r.State != store.AwaitingApproval {
			t.Fatalf("RequestApproval: got %s, %v", r.State, err)
		}
		if r, err := l.Reopen(t.Context(), "r-1", "U1"); err != nil || r.State != store.Planned {
			t.Fatalf("Reopen: got %s, %v", r.State, err)
		}
		if _, _, err := l.Approve(t.Context(), "r-1", "U2"); !isConflict(err, store.Planned) {
			t.Errorf("Approve of a planned request: got error %v, want a conflict (planned)", err)
		}
		l.RequestApproval(t.Context(), "r-1", "U1")
		r, s, err := l.Approve(t.Context(), "r-1", "U2")
		if err != nil || r.State != store.Submitting || r.Approver != "U2" || s.Wave != 0 {
			t.Fatalf("Approve: got %+v, %+v, %v; want submitting, approver U2, wave 0", r, s, err)
		}
		// Reject and cancel.
		l.RequestApproval(t.Context(), "r-2", "U1")
		if r, err := l.Reject(t.Context(), "r-2", "U3"); err != nil || r.State != store.Rejected || r.Approver != "U3" {
			t.Errorf("Reject: got %+v, %v", r, err)
		}
		if r, err := l.Cancel(t.Context(), "r-3", "U1"); err != nil || r.State != store.Cancelled {
			t.Errorf("Cancel: got %+v, %v", r, err)
		}
		if _, err := l.Cancel(t.Context(), "r-1", "U1"); !isConflict(err, store.Submitting) {
			t.Errorf("Cancel of a submitting request: got error %v, want a conflict", err)
		}
		// Expiry: refused before ExpiresAt, and after it the plan can
		// only expire.
		if _, err := l.Expire(t.Context(), "r-4", ""); !isRefused(err) {
			t.Errorf("Expire before ExpiresAt: got error %v, want a refusal", err)
		}
		if step := next(t, st, "r-4"); step.Action != ActionWait || step.Until.IsZero() {
			t.Errorf("Next of an open plan: got %+v, want wait until it expires", step)
		}
		time.Sleep(testTTL)
		if step := next(t, st, "r-4"); step.Action != ActionExpire {
			t.Errorf("Next of an expired plan: got %+v, want expire", step)
		}
		if _, _, err := l.Confirm(t.Context(), "r-4", "U1"); !errors.As(err, new(*store.ExpiredError)) {
			t.Errorf("Confirm after ExpiresAt: got error %v, want a *store.ExpiredError", err)
		}
		if r, err := l.Expire(t.Context(), "r-4", ""); err != nil || r.State != store.Expired {
			t.Errorf("Expire: got %+v, %v", r, err)
		}
	})
}

// TestCanaryThenRest: the rest goes only once every canary Completed,
// without anyone clicking.
func TestCanaryThenRest(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		l, st, _ := newLife(t)
		create(t, l, "r-1", Options{Canary: 2}, inst("a", "cassandra", ""), inst("b", "cassandra", ""), inst("c", "cassandra", ""))
		_, s, err := l.Confirm(t.Context(), "r-1", "U1")
		if err != nil || s.Wave != 0 || !reflect.DeepEqual(s.Batches, []upgrade.Batch{{Engine: "cassandra", InstanceIDs: []string{"a", "b"}}}) {
			t.Fatalf("Confirm: got %+v, %v; want the canary a, b", s, err)
		}
		send(t, l, st, s, nil)
		if step := next(t, st, "r-1"); step.Action != ActionWait || !strings.Contains(step.Why, "canary") {
			t.Errorf("Next with the canary running: got %+v, want wait for the canary", step)
		}
		if _, _, err := l.SendWave(t.Context(), "r-1", 1, ""); !isRefused(err) {
			t.Errorf("SendWave before the canary completed: got error %v, want a refusal", err)
		}
		endJob(t, st, "job-a", upgrade.JobCompleted)
		if step := next(t, st, "r-1"); step.Action != ActionWait {
			t.Errorf("Next with one canary running: got %+v, want wait", step)
		}
		endJob(t, st, "job-b", upgrade.JobCompleted)
		step := next(t, st, "r-1")
		if step.Action != ActionSend || step.Wave != 1 {
			t.Fatalf("Next with the canary completed: got %+v, want send wave 1", step)
		}
		r, s, err := l.SendWave(t.Context(), "r-1", 1, "")
		if err != nil || r.State != store.Submitting || s.Batches[0].InstanceIDs[0] != "c" {
			t.Fatalf("SendWave: got %+v, %+v, %v; want wave 1 (c) claimed", r, s, err)
		}
		if _, _, err := l.SendWave(t.Context(), "r-1", 1, ""); !isConflict(err, store.Submitting) {
			t.Errorf("second SendWave while sending: got error %v, want a conflict", err)
		}
		send(t, l, st, s, nil)
		if _, _, err := l.SendWave(t.Context(), "r-1", 1, ""); !isRefused(err) {
			t.Errorf("SendWave of a sent wave: got error %v, want a refusal", err)
		}
		endJob(t, st, "job-c", upgrade.JobCompleted)
		if step := next(t, st, "r-1"); step.Action != ActionFinish {
			t.Errorf("Next at the end: got %+v, want finish", step)
		}
	})
}

// TestCanaryWentWrongPauses: a Failed canary, one whose outcome is
// unknown, and one no longer followed each pause the request; Continue
// sends the rest once; Stop ends it with nothing more sent.
func TestCanaryWentWrongPauses(t *testing.T) {
	t.Parallel()
	unknown := func(id string) upgrade.UpgradeResult {
		return upgrade.UpgradeResult{InstanceID: id, ErrorCode: "UNKNOWN", ErrorMessage: "timeout"}
	}
	tests := []struct {
		name   string
		answer func(string) upgrade.UpgradeResult
		end    func(t *testing.T, st Store)
		want   string
	}{
		{"failed", nil, func(t *testing.T, st Store) {
			st.UpdateJob(t.Context(), "job-a", func(j *store.Job) error {
				j.Status, j.FailReason, j.Reported = upgrade.JobFailed, "disk full", true
				return nil
			})
		}, "a failed: disk full"},
		{"unknown", unknown, func(*testing.T, Store) {}, "a started no job"},
		{"unfollowed", nil, func(t *testing.T, st Store) {
			st.UpdateJob(t.Context(), "job-a", func(j *store.Job) error { j.GaveUp = true; return nil })
		}, "a is no longer followed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l, st, _ := newLife(t)
				create(t, l, "r-1", Options{Canary: 1}, inst("a", "cassandra", ""), inst("b", "cassandra", ""))
				_, s, _ := l.Confirm(t.Context(), "r-1", "U1")
				send(t, l, st, s, tc.answer)
				if tc.name != "unknown" {
					if _, err := l.Pause(t.Context(), "r-1"); !isRefused(err) {
						t.Errorf("Pause with the canary running: got error %v, want a refusal", err)
					}
				}
				tc.end(t, st)
				step := next(t, st, "r-1")
				if step.Action != ActionPause || !strings.Contains(step.Why, tc.want) || !slices.Equal(step.Instances, []string{"a"}) {
					t.Fatalf("Next: got %+v, want pause because %q", step, tc.want)
				}
				if _, _, err := l.SendWave(t.Context(), "r-1", 1, ""); !isRefused(err) {
					t.Errorf("SendWave after the canary went wrong: got error %v, want a refusal", err)
				}
				r, err := l.Pause(t.Context(), "r-1")
				if err != nil || r.State != store.Paused {
					t.Fatalf("Pause: got %s, %v; want paused", r.State, err)
				}
				if _, ro := rollout(t, st, "r-1"); ro.Paused == nil || !strings.Contains(ro.Paused.Why, tc.want) {
					t.Errorf("got pause mark %+v, want the reason", ro.Paused)
				}
				if step := next(t, st, "r-1"); step.Action != ActionWait || !strings.Contains(step.Why, "Continue or Stop") {
					t.Errorf("Next when paused: got %+v, want wait for a person", step)
				}
				if _, _, err := l.SendWave(t.Context(), "r-1", 1, ""); !isConflict(err, store.Paused) {
					t.Errorf("SendWave when paused: got error %v, want a conflict (paused)", err)
				}
				if r, err := l.Continue(t.Context(), "r-1", "U1"); err != nil || r.State != store.Submitted {
					t.Fatalf("Continue: got %s, %v", r.State, err)
				}
				if _, err := l.Continue(t.Context(), "r-1", "U1"); !isConflict(err, store.Submitted) {
					t.Errorf("second Continue: got error %v, want a conflict (submitted)", err)
				}
				if _, err := l.Pause(t.Context(), "r-1"); !isRefused(err) {
					t.Errorf("Pause after Continue: got error %v, want a refusal", err)
				}
				if step := next(t, st, "r-1"); step.Action != ActionSend || step.Wave != 1 {
					t.Fatalf("Next after Continue: got %+v, want send wave 1", step)
				}
				_, s, err = l.SendWave(t.Context(), "r-1", 1, "U1")
				if err != nil {
					t.Fatalf("SendWave after Continue: got error %v, want nil", err)
				}
				send(t, l, st, s, nil)
				if _, _, err := l.SendWave(t.Context(), "r-1", 1, "U1"); !isRefused(err) {
					t.Errorf("SendWave again: got error %v, want a refusal", err)
				}
			})
		})
	}
}

// TestStopWhilePaused: nothing is sent after Stop; the summary is still
// owed, once.
func TestStopWhilePaused(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		l, st, _ := newLife(t)
		create(t, l, "r-1", Options{Canary: 1}, inst("a", "cassandra", ""), inst("b", "cassandra", ""), inst("c", "influxdb", ""))
		_, s, _ := l.Confirm(t.Context(), "r-1", "U1")
		send(t, l, st, s, nil)
		endJob(t, st, "job-a", upgrade.JobFailed)
		if _, err := l.Pause(t.Context(), "r-1"); err != nil {
			t.Fatalf("Pause: got error %v", err)
		}
		r, err := l.Stop(t.Context(), "r-1", "U2")
		if err != nil || r.State != store.Stopped {
			t.Fatalf("Stop: got %s, %v; want stopped", r.State, err)
		}
		if _, err := l.Stop(t.Context(), "r-1", "U2"); !isConflict(err, store.Stopped) {
			t.Errorf("second Stop: got error %v, want a conflict (stopped)", err)
		}
		if _, err := l.Continue(t.Context(), "r-1", "U1"); !isConflict(err, store.Stopped) {
			t.Errorf("Continue after Stop: got error %v, want a conflict (stopped)", err)
		}
		if _, _, err := l.SendWave(t.Context(), "r-1", 1, ""); !isConflict(err, store.Stopped) {
			t.Errorf("SendWave after Stop: got error %v, want a conflict (stopped)", err)
		}
		_, ro := rollout(t, st, "r-1")
		if ro.Stopped == nil || ro.Stopped.By != "U2" || !slices.Equal(ro.Unsent(), []string{"b", "c"}) {
			t.Errorf("got stop mark %+v and unsent %v, want by U2 and b, c", ro.Stopped, ro.Unsent())
		}
		if step := next(t, st, "r-1"); step.Action != ActionFinish {
			t.Errorf("Next when stopped: got %+v, want finish (the summary)", step)
		}
		if r, err := l.Finish(t.Context(), "r-1"); err != nil || r.State != store.Stopped {
			t.Fatalf("Finish of a stopped request: got %s, %v; want stopped, finished", r.State, err)
		}
		if _, err := l.Finish(t.Context(), "r-1"); !isRefused(err) {
			t.Errorf("second Finish: got error %v, want a refusal", err)
		}
		if step := next(t, st, "r-1"); step.Action != ActionNone {
			t.Errorf("Next when stopped and finished: got %+v, want none", step)
		}
	})
}

// TestStopDuringAWave: a Stop while a wave is being sent lets no further
// batch go; the wave's end moves the request to stopped.
func TestStopDuringAWave(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		l, st, _ := newLife(t)
		var ins []upgrade.Instance
		for i := range 15 {
			ins = append(ins, inst(fmt.Sprintf("i%02d", i), "cassandra", ""))
		}
		create(t, l, "r-1", Options{}, ins...)
		_, s, _ := l.Confirm(t.Context(), "r-1", "U1")
		if len(s.Batches) != 2 {
			t.Fatalf("got %d batches, want 2", len(s.Batches))
		}
		if err := l.BeginBatch(t.Context(), s, s.Batches[0].InstanceIDs); err != nil {
			t.Fatalf("BeginBatch: %v", err)
		}
		r, err := l.Stop(t.Context(), "r-1", "U2")
		if err != nil || r.State != store.Submitting {
			t.Fatalf("Stop during a wave: got %s, %v; want still submitting, stop recorded", r.State, err)
		}
		if _, err := l.Stop(t.Context(), "r-1", "U2"); !isRefused(err) {
			t.Errorf("second Stop during a wave: got error %v, want a refusal", err)
		}
		// The batch in flight is recorded; the next one is not sent.
		var answers []upgrade.UpgradeResult
		for _, id := range s.Batches[0].InstanceIDs {
			answers = append(answers, upgrade.UpgradeResult{InstanceID: id, JobID: "job-" + id})
		}
		if err := l.EndBatch(t.Context(), s, answers); err != nil {
			t.Fatalf("EndBatch after Stop: got error %v, want nil", err)
		}
		if err := l.BeginBatch(t.Context(), s, s.Batches[1].InstanceIDs); !errors.Is(err, ErrStopped) {
			t.Fatalf("BeginBatch after Stop: got error %v, want ErrStopped", err)
		}
		r, err = l.EndSend(t.Context(), s)
		if err != nil || r.State != store.Stopped {
			t.Fatalf("EndSend after Stop: got %s, %v; want stopped", r.State, err)
		}
		if err := l.Renew(t.Context(), &s.Claim); !errors.Is(err, ErrLost) {
			t.Errorf("Renew after EndSend: got error %v, want ErrLost", err)
		}
		if _, ro := rollout(t, st, "r-1"); !slices.Equal(ro.Unsent(), nil) || ro.Waves[0].Ended.IsZero() {
			t.Errorf("got rollout %+v, want its one wave started and ended", ro)
		}
	})
}

// TestWaitForWindow: a scheduled wave goes when its window opens, not
// before, and Stop stops what has not gone.
func TestWaitForWindow(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		// The bubble's clock starts at midnight UTC.
		l, st, _ := newLife(t)
		create(t, l, "r-1", Options{WaitForWindow: true}, inst("a", "cassandra", "02:00-03:00"), inst("b", "cassandra", "04:00-05:00"))
		r, s, err := l.Confirm(t.Context(), "r-1", "U1")
		if err != nil || s.Wave != -1 || r.ResultsPending {
			t.Fatalf("Confirm with every window closed: got %+v, %v; want no wave yet", s, err)
		}
		if r, err = l.EndSend(t.Context(), s); err != nil || r.State != store.Submitted {
			t.Fatalf("EndSend: got %s, %v; want submitted", r.State, err)
		}
		two := time.Now().Add(2 * time.Hour)
		step := next(t, st, "r-1")
		if step.Action != ActionWait || !step.Until.Equal(two) {
			t.Fatalf("Next before the window: got %+v, want wait until %s", step, two)
		}
		_, _, err = l.SendWave(t.Context(), "r-1", 0, "")
		if re, ok := errors.AsType[*RefusedError](err); !ok || !re.Until.Equal(two) {
			t.Fatalf("SendWave before its window: got error %v, want a refusal until %s", err, two)
		}
		time.Sleep(time.Until(step.Until))
		if step := next(t, st, "r-1"); step.Action != ActionSend || step.Wave != 0 {
			t.Fatalf("Next when the window opens: got %+v, want send wave 0", step)
		}
		if _, _, err := l.SendWave(t.Context(), "r-1", 1, ""); !isRefused(err) {
			t.Errorf("SendWave of the 04:00 wave at 02:00: got error %v, want a refusal", err)
		}
		_, s, err = l.SendWave(t.Context(), "r-1", 0, "")
		if err != nil {
			t.Fatalf("SendWave in its window: got error %v, want nil", err)
		}
		send(t, l, st, s, nil)
		if step := next(t, st, "r-1"); step.Action != ActionWait || step.Until.Hour() != 4 {
			t.Errorf("Next after the first window: got %+v, want wait until 04:00", step)
		}
		if r, err := l.Stop(t.Context(), "r-1", "U1"); err != nil || r.State != store.Stopped {
			t.Fatalf("Stop: got %s, %v", r.State, err)
		}
		time.Sleep(3 * time.Hour)
		if _, _, err := l.SendWave(t.Context(), "r-1", 1, ""); !isConflict(err, store.Stopped) {
			t.Errorf("SendWave in its window after Stop: got error %v, want a conflict (stopped)", err)
		}
		if _, ro := rollout(t, st, "r-1"); !slices.Equal(ro.Unsent(), []string{"b"}) {
			t.Errorf("got unsent %v, want b", ro.Unsent())
		}
	})
}

// TestCanaryInTheFirstWindow: canary and windows together; a wave missing
// its window waits for the next day's.
func TestCanaryInTheFirstWindow(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		l, st, _ := newLife(t)
		create(t, l, "r-1", Options{Canary: 1, WaitForWindow: true},
			inst("a", "cassandra", "01:00-02:00"), inst("b", "cassandra", "01:00-02:00"))
		_, s, _ := l.Confirm(t.Context(), "r-1", "U1")
		l.EndSend(t.Context(), s)
		time.Sleep(time.Hour)
		step := next(t, st, "r-1")
		if step.Action != ActionSend || step.Wave != 0 {
			t.Fatalf("Next at 01:00: got %+v, want send the canary", step)
		}
		_, s, _ = l.SendWave(t.Context(), "r-1", 0, "")
		send(t, l, st, s, nil)
		time.Sleep(90 * time.Minute) // 02:30: the window closed while the canary ran
		endJob(t, st, "job-a", upgrade.JobCompleted)
		step = next(t, st, "r-1")
		if step.Action != ActionWait || !step.Until.Equal(time.Date(2000, 1, 2, 1, 0, 0, 0, time.UTC)) {
			t.Fatalf("Next after the window closed: got %+v, want wait for the next day's window", step)
		}
		time.Sleep(time.Until(step.Until))
		if step := next(t, st, "r-1"); step.Action != ActionSend || step.Wave != 1 {
			t.Fatalf("Next in the next window: got %+v, want send wave 1", step)
		}
	})
}

// TestRestartResumes: the schedule and the waves' progress are in the
// store; a bot that reopens it carries on, and takes over a wave whose
// sender died once its claim ran out.
func TestRestartResumes(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		l, st, path := newLife(t)
		var ins []upgrade.Instance
		for i := range 13 {
			ins = append(ins, inst(fmt.Sprintf("i%02d", i), "cassandra", "01:00-02:00"))
		}
		create(t, l, "r-1", Options{Canary: 1, WaitForWindow: true}, ins...)
		_, s, _ := l.Confirm(t.Context(), "r-1", "U1")
		l.EndSend(t.Context(), s)
		st.Close() // the bot stops while the request is scheduled

		time.Sleep(time.Hour)
		st = openBolt(t, path, time.Now)
		l = New(st, time.Now, testLease)
		if step := next(t, st, "r-1"); step.Action != ActionSend || step.Wave != 0 {
			t.Fatalf("Next after a restart, in the window: got %+v, want send wave 0", step)
		}
		_, s, _ = l.SendWave(t.Context(), "r-1", 0, "")
		send(t, l, st, s, nil)
		endJob(t, st, "job-i00", upgrade.JobCompleted)
		st.Close() // stops between waves

		st = openBolt(t, path, time.Now)
		l = New(st, time.Now, testLease)
		step := next(t, st, "r-1")
		if step.Action != ActionSend || step.Wave != 1 {
			t.Fatalf("Next after a restart between waves: got %+v, want send wave 1", step)
		}
		_, s, err := l.SendWave(t.Context(), "r-1", 1, "")
		if err != nil || len(s.Batches) != 2 {
			t.Fatalf("SendWave: got %+v, %v; want 2 batches", s, err)
		}
		// The first batch goes out and is recorded; the second is in
		// flight when the bot dies; one job of it was recorded.
		first := s.Batches[0].InstanceIDs
		l.BeginBatch(t.Context(), s, first)
		var answers []upgrade.UpgradeResult
		for _, id := range first {
			putJob(t, st, "r-1", "job-"+id, id)
			answers = append(answers, upgrade.UpgradeResult{InstanceID: id, JobID: "job-" + id})
		}
		l.EndBatch(t.Context(), s, answers)
		second := s.Batches[1].InstanceIDs
		l.BeginBatch(t.Context(), s, second)
		putJob(t, st, "r-1", "job-"+second[0], second[0])
		stale := *s
		st.Close()

		st = openBolt(t, path, time.Now)
		l = New(st, time.Now, testLease)
		if step := next(t, st, "r-1"); step.Action != ActionWait {
			t.Errorf("Next while the claim runs: got %+v, want wait", step)
		}
		if _, _, err := l.Recover(t.Context(), "r-1"); !errors.Is(err, ErrHeld) {
			t.Errorf("Recover while the claim runs: got error %v, want ErrHeld", err)
		}
		time.Sleep(testLease)
		if step := next(t, st, "r-1"); step.Action != ActionRecover {
			t.Fatalf("Next once the claim ran out: got %+v, want recover", step)
		}
		_, s, err = l.Recover(t.Context(), "r-1")
		if err != nil || s.Wave != 1 {
			t.Fatalf("Recover: got %+v, %v; want wave 1", s, err)
		}
		want := &Recovery{
			Answers: []upgrade.UpgradeResult{{InstanceID: second[0], JobID: "job-" + second[0]}},
			Unknown: second[1:],
		}
		if !reflect.DeepEqual(s.Recovered, want) {
			t.Errorf("got recovery %+v, want %+v", s.Recovered, want)
		}
		// The stale holder is fenced off.
		if err := l.EndBatch(t.Context(), &stale, nil); !errors.Is(err, ErrLost) {
			t.Errorf("EndBatch by the stale holder: got error %v, want ErrLost", err)
		}
		if err := l.BeginBatch(t.Context(), &stale, second); !errors.Is(err, ErrLost) {
			t.Errorf("BeginBatch by the stale holder: got error %v, want ErrLost", err)
		}
		rec := s.Recovered.Answers
		for _, id := range s.Recovered.Unknown {
			rec = append(rec, upgrade.UpgradeResult{InstanceID: id, ErrorCode: "UNKNOWN"})
		}
		if err := l.EndBatch(t.Context(), s, rec); err != nil {
			t.Fatalf("EndBatch by the recoverer: %v", err)
		}
		r, err := l.EndSend(t.Context(), s)
		if err != nil || r.State != store.Submitted {
			t.Fatalf("EndSend by the recoverer: got %s, %v", r.State, err)
		}
		if _, err := l.EndSend(t.Context(), &stale); !errors.Is(err, ErrLost) {
			t.Errorf("EndSend by the stale holder: got error %v, want ErrLost", err)
		}
		if _, all, _ := answered(r); len(all) != 13 {
			t.Errorf("got %d answers, want 13 (one per instance of waves 0 and 1)", len(all))
		}
	})
}

// TestBeginBatchChecksTheWave: a holder can only send unanswered
// instances of its own wave.
func TestBeginBatchChecksTheWave(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		l, st, _ := newLife(t)
		create(t, l, "r-1", Options{Canary: 1}, inst("a", "cassandra", ""), inst("b", "cassandra", ""))
		_, s, _ := l.Confirm(t.Context(), "r-1", "U1")
		if err := l.BeginBatch(t.Context(), s, []string{"b"}); err == nil {
			t.Errorf("BeginBatch of another wave's instance: got nil error, want one")
		}
		send(t, l, st, s, nil)
		if err := l.BeginBatch(t.Context(), s, []string{"a"}); !errors.Is(err, ErrLost) {
			t.Errorf("BeginBatch after EndSend: got error %v, want ErrLost", err)
		}
	})
}

// TestNotPatched: what Retry offers is every instance without a job that
// Completed, sent or not.
func TestNotPatched(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		l, st, _ := newLife(t)
		create(t, l, "r-1", Options{Canary: 3},
			inst("ok", "cassandra", ""), inst("bad", "cassandra", ""), inst("refused", "cassandra", ""), inst("unsent", "cassandra", ""))
		_, s, _ := l.Confirm(t.Context(), "r-1", "U1")
		send(t, l, st, s, func(id string) upgrade.UpgradeResult {
			if id == "refused" {
				return upgrade.UpgradeResult{InstanceID: id, ErrorCode: "DBS.200019", ErrorMessage: "busy"}
			}
			return upgrade.UpgradeResult{InstanceID: id, JobID: "job-" + id}
		})
		if _, err := l.Stop(t.Context(), "r-1", "U1"); err != nil {
			t.Fatal(err)
		}
		endJob(t, st, "job-ok", upgrade.JobCompleted)
		endJob(t, st, "job-bad", upgrade.JobFailed)
		r, _ := st.Get(t.Context(), "r-1")
		jobs, _ := st.Jobs(t.Context(), "r-1")
		got, err := NotPatched(r, jobs)
		if err != nil || !slices.Equal(got, []string{"bad", "refused", "unsent"}) {
			t.Errorf("NotPatched: got %v, %v; want bad, refused, unsent", got, err)
		}
	})
}

// TestEndBatchReplacesAnswers: an instance has one answer, the last.
func TestEndBatchReplacesAnswers(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		l, _, _ := newLife(t)
		create(t, l, "r-1", Options{}, inst("a", "cassandra", ""), inst("b", "cassandra", ""))
		_, s, _ := l.Confirm(t.Context(), "r-1", "U1")
		l.EndBatch(t.Context(), s, []upgrade.UpgradeResult{{InstanceID: "a", ErrorCode: "UNKNOWN"}, {InstanceID: "b", ErrorCode: "NOT_SENT"}})
		l.EndBatch(t.Context(), s, []upgrade.UpgradeResult{{InstanceID: "a", JobID: "job-a"}})
		r, err := l.EndSend(t.Context(), s)
		if err != nil {
			t.Fatal(err)
		}
		_, all, _ := answered(r)
		want := []upgrade.UpgradeResult{{InstanceID: "b", ErrorCode: "NOT_SENT"}, {InstanceID: "a", JobID: "job-a"}}
		if !reflect.DeepEqual(all, want) {
			t.Errorf("got answers %+v, want %+v", all, want)
		}
	})
}
