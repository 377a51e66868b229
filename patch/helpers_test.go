package patch

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// testLease is the submission lease of the tests' lifecycles.
const testLease = 2 * time.Minute

// testTTL is how long the tests' plans may be confirmed.
const testTTL = 15 * time.Minute

// openBolt opens the store file at path with the clock now, closed at
// cleanup (a second Close after a test's own is harmless).
func openBolt(t *testing.T, path string, now func() time.Time) *store.Bolt {
	t.Helper()
	st, err := store.OpenWith(path, store.Options{Now: now})
	if err != nil {
		t.Fatalf("OpenWith: got error %v, want nil", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// newLife returns a lifecycle on a fresh bbolt store whose clock is
// time.Now (the bubble's under synctest), and the store and its path.
func newLife(t *testing.T) (*Lifecycle, *store.Bolt, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.db")
	st := openBolt(t, path, time.Now)
	return New(st, time.Now, testLease), st, path
}

// create stores request id for the instances, with opts, planned now.
func create(t *testing.T, l *Lifecycle, id string, opts Options, ins ...upgrade.Instance) store.Request {
	t.Helper()
	now := time.Now()
	r, err := l.Create(t.Context(), store.Request{ID: id, Requester: "U1", Channel: "C1", ExpiresAt: now.Add(testTTL)}, planFor(now, false, ins...), opts)
	if err != nil {
		t.Fatalf("Create(%s): got error %v, want nil", id, err)
	}
	return r
}

// send does what the bot does with a Send: every batch under the claim,
// a job per instance (unless answer gives another answer), the answers
// recorded, the send ended, and the answers posted (ResultsPending
// cleared). It returns the request as it ended.
func send(t *testing.T, l *Lifecycle, st Store, s *Send, answer func(id string) upgrade.UpgradeResult) store.Request {
	t.Helper()
	for _, b := range s.Batches {
		if err := l.BeginBatch(t.Context(), s, b.InstanceIDs); err != nil {
			t.Fatalf("BeginBatch: got error %v, want nil", err)
		}
		var answers []upgrade.UpgradeResult
		for _, id := range b.InstanceIDs {
			a := upgrade.UpgradeResult{InstanceID: id, JobID: "job-" + id}
			if answer != nil {
				a = answer(id)
			}
			if a.JobID != "" {
				putJob(t, st, s.RequestID, a.JobID, id)
			}
			answers = append(answers, a)
		}
		if err := l.EndBatch(t.Context(), s, answers); err != nil {
			t.Fatalf("EndBatch: got error %v, want nil", err)
		}
	}
	r, err := l.EndSend(t.Context(), s)
	if err != nil {
		t.Fatalf("EndSend: got error %v, want nil", err)
	}
	return posted(t, st, r.ID)
}

// jobStore is the part of a store the tests write jobs with.
type jobStore interface {
	PutJob(ctx context.Context, j store.Job) error
	UpdateJob(ctx context.Context, id string, mutate func(*store.Job) error) (store.Job, error)
}

// putJob records a running job, as the bot does after a batch answer.
func putJob(t *testing.T, st Store, requestID, jobID, instanceID string) {
	t.Helper()
	if err := st.(jobStore).PutJob(t.Context(), store.Job{ID: jobID, RequestID: requestID, InstanceID: instanceID, SubmittedAt: time.Now()}); err != nil {
		t.Fatalf("PutJob: got error %v, want nil", err)
	}
}

// endJob records a job's end (Completed or Failed) as reported.
func endJob(t *testing.T, st Store, jobID, status string) {
	t.Helper()
	if _, err := st.UpdateJob(t.Context(), jobID, func(j *store.Job) error {
		j.Status, j.Ended, j.Reported = status, time.Now(), true
		return nil
	}); err != nil {
		t.Fatalf("UpdateJob: got error %v, want nil", err)
	}
}

// posted clears ResultsPending, as the bot does once a wave's answers are
// in the thread.
func posted(t *testing.T, st Store, id string) store.Request {
	t.Helper()
	r, err := st.Update(t.Context(), id, func(x *store.Request) error { x.ResultsPending = false; return nil })
	if err != nil {
		t.Fatalf("Update: got error %v, want nil", err)
	}
	return r
}

// next is Next on the stored request and its jobs, now.
func next(t *testing.T, st Store, id string) Step {
	t.Helper()
	r, err := st.Get(t.Context(), id)
	if err != nil {
		t.Fatalf("Get: got error %v, want nil", err)
	}
	jobs, err := st.Jobs(t.Context(), id)
	if err != nil {
		t.Fatalf("Jobs: got error %v, want nil", err)
	}
	step, err := Next(r, jobs, time.Now())
	if err != nil {
		t.Fatalf("Next: got error %v, want nil", err)
	}
	return step
}

// rollout reads the stored request's rollout.
func rollout(t *testing.T, st Store, id string) (store.Request, Rollout) {
	t.Helper()
	r, err := st.Get(t.Context(), id)
	if err != nil {
		t.Fatalf("Get: got error %v, want nil", err)
	}
	ro, err := RolloutOf(r)
	if err != nil {
		t.Fatalf("RolloutOf: got error %v, want nil", err)
	}
	return r, ro
}

// isConflict reports whether err is a lost race: a *store.ConflictError
// saying the request is in state got.
func isConflict(err error, got store.State) bool {
	ce, ok := errors.AsType[*store.ConflictError](err)
	return ok && ce.Got == got
}

// isRefused reports whether err is a *RefusedError.
func isRefused(err error) bool {
	_, ok := errors.AsType[*RefusedError](err)
	return ok && errors.Is(err, store.ErrConflict)
}
