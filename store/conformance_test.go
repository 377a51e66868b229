package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// backend is the method set Bolt and Redis share; the bot's Store interface
// is a subset of it.
type backend interface {
	Create(ctx context.Context, r Request) error
	Get(ctx context.Context, id string) (Request, error)
	Transition(ctx context.Context, id string, from []State, to State, user string, mutate func(*Request)) (Request, error)
	TransitionIf(ctx context.Context, id string, from []State, to State, user string, mutate func(*Request) error) (Request, error)
	Update(ctx context.Context, id string, mutate func(*Request) error) (Request, error)
	List(ctx context.Context, states ...State) ([]Request, error)
	PutJob(ctx context.Context, j Job) error
	Job(ctx context.Context, id string) (Job, error)
	UpdateJob(ctx context.Context, id string, mutate func(*Job) error) (Job, error)
	Jobs(ctx context.Context, requestID string) ([]Job, error)
	ActiveJobs(ctx context.Context) ([]Job, error)
	Allow(ctx context.Context, key string, limit int, window time.Duration) (bool, error)
	Remember(ctx context.Context, key string, ttl time.Duration) (bool, error)
	Recent(ctx context.Context, n int, keep func(Request) bool, states ...State) ([]Request, error)
	Prune(ctx context.Context, before time.Time, max int) (int, error)
	OpenPlans(ctx context.Context, user string, now time.Time) (int, error)
	Due(ctx context.Context, now time.Time, max int) ([]Request, error)
	DueJobs(ctx context.Context, now time.Time, max int) ([]Job, error)
	TransitionLock(ctx context.Context, id string, from []State, to State, user string, keys []string, mutate func(r *Request, held map[string]string) ([]string, error)) (Request, error)
	Unlock(ctx context.Context, id string, keys []string) error
	LockHolders(ctx context.Context, keys []string) (map[string]string, error)
	Locks(ctx context.Context, id string) ([]string, error)
	Decoded() int64
	Ping(ctx context.Context) error
	Close() error
	Path() string
}

var (
	_ backend = (*Bolt)(nil)
	_ backend = (*Redis)(nil)
)

// conformance runs the tests every backend must pass, each in parallel on
// a fresh, empty store from open (which closes it at cleanup) whose time is
// now, the Now of a clock of the test's own.
func conformance(t *testing.T, open func(t *testing.T, now func() time.Time) backend) {
	tests := []struct {
		name string
		fn   func(t *testing.T, b backend, c *clock)
	}{
		{"CreateGet", noClock(testCreateGet)},
		{"Transition", noClock(testTransition)},
		{"TransitionConcurrentOneWinner", noClock(testTransitionConcurrentOneWinner)},
		{"TransitionIf", noClock(testTransitionIf)},
		{"RolloutAndPollClaimRoundTrip", noClock(testRolloutAndPollClaimRoundTrip)},
		{"TransitionRespectsExpiry", testTransitionRespectsExpiry},
		{"Recent", testRecent},
		{"Update", noClock(testUpdate)},
		{"List", noClock(testList)},
		{"Jobs", noClock(testJobs)},
		{"UpdateJobConcurrent", noClock(testUpdateJobConcurrent)},
		{"JobIndexesFollowUpdateJob", noClock(testJobIndexesFollowUpdateJob)},
		{"StateIndexFollowsWrites", noClock(testStateIndexFollowsWrites)},
		{"ReadsCostWhatTheyReturn", noClock(testReadsCostWhatTheyReturn)},
		{"Prune", testPrune},
		{"PruneCostFollowsDeleted", testPruneCostFollowsDeleted},
		{"PruneConcurrent", testPruneConcurrent},
		{"Allow", testAllow},
		{"AllowConcurrent", testAllowConcurrent},
		{"AllowArgs", noClock(testAllowArgs)},
		{"Remember", testRemember},
		{"RememberConcurrent", testRememberConcurrent},
		{"RememberArgs", noClock(testRememberArgs)},
		{"CancelledContext", noClock(testCancelledContext)},
		{"OpenPlans", testOpenPlans},
		{"OpenPlansCostIndependentOfOthers", testOpenPlansCost},
		{"Due", testDue},
		{"DueCostIndependentOfNotDue", testDueCost},
		{"DueJobs", testDueJobs},
		{"PruneKeepsLiveWork", testPruneKeepsLiveWork},
		{"Locks", noClock(testLocks)},
		{"LocksConcurrentOneHolder", noClock(testLocksConcurrent)},
		{"LocksSkipHeld", noClock(testLocksSkipHeld)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newClock()
			tc.fn(t, open(t, c.Now), c)
		})
	}
}

// noClock adapts a test that does not use the clock.
func noClock(fn func(t *testing.T, b backend)) func(t *testing.T, b backend, c *clock) {
	return func(t *testing.T, b backend, _ *clock) { fn(t, b) }
}

func TestBoltConformance(t *testing.T) {
	t.Parallel()
	conformance(t, func(t *testing.T, now func() time.Time) backend {
		return setupWith(t, now)
	})
}

func testCreateGet(t *testing.T, b backend) {
	want := Request{
		ID:        "r-1",
		State:     Planned,
		Requester: "U1",
		Channel:   "C1",
		Text:      "db1 db2 --dry-run",
		Plan:      json.RawMessage(`{"targets":[{"ref":"db1"}]}`),
		Owner:     "replica-1",
		ExpiresAt: time.Date(2026, 11, 28, 9, 15, 0, 0, time.UTC),
	}
	mustCreate(t, b, want)
	got, err := b.Get(t.Context(), "r-1")
	if err != nil {
		t.Fatalf("Get: got error %v, want nil", err)
	}
	if got.CreatedAt.IsZero() || !got.CreatedAt.Equal(got.UpdatedAt) {
		t.Errorf("got CreatedAt %v and UpdatedAt %v, want both set and equal", got.CreatedAt, got.UpdatedAt)
	}
	want.CreatedAt, want.UpdatedAt = got.CreatedAt, got.UpdatedAt
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}

	if err := b.Create(t.Context(), Request{ID: "r-1", State: Planned}); !errors.Is(err, ErrExists) {
		t.Errorf("Create of a taken ID: got error %v, want ErrExists", err)
	}
	if _, err := b.Get(t.Context(), "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(nope): got error %v, want ErrNotFound", err)
	}
	if err := b.Create(t.Context(), Request{}); err == nil {
		t.Errorf("Create without ID: got nil error, want one")
	}
	if err := b.Create(t.Context(), Request{ID: "bad", Plan: json.RawMessage("{")}); err == nil {
		t.Errorf("Create with invalid Plan JSON: got nil error, want one")
	}
}

func testTransition(t *testing.T, b backend) {
	mustCreate(t, b, Request{ID: "r-1", State: Planned, Requester: "U1"})
	before, _ := b.Get(t.Context(), "r-1")

	got, err := b.Transition(t.Context(), "r-1", []State{Planned, Approved}, Submitting, "U1", func(r *Request) {
		r.ParentTS = "1700000000.000100"
		r.ID = "hijack" // ignored: the ID cannot change
	})
	if err != nil {
		t.Fatalf("Transition: got error %v, want nil", err)
	}
	if got.State != Submitting || got.ParentTS != "1700000000.000100" || got.ID != "r-1" {
		t.Errorf("got %+v, want state submitting, ParentTS set, ID r-1", got)
	}
	if !got.UpdatedAt.After(before.UpdatedAt) {
		t.Errorf("got UpdatedAt %v, want after %v", got.UpdatedAt, before.UpdatedAt)
	}
	wantHistory := []Event{{At: got.UpdatedAt, From: Planned, To: Submitting, User: "U1"}}
	if !reflect.DeepEqual(got.History, wantHistory) {
		t.Errorf("got history %+v, want %+v", got.History, wantHistory)
	}
	stored, _ := b.Get(t.Context(), "r-1")
	if !reflect.DeepEqual(stored, got) {
		t.Errorf("got stored %+v, want the returned %+v", stored, got)
	}

	// A second attempt loses and changes nothing.
	_, err = b.Transition(t.Context(), "r-1", []State{Planned, Approved}, Submitting, "U2", func(r *Request) { r.ParentTS = "x" })
	var ce *ConflictError
	if !errors.As(err, &ce) || !errors.Is(err, ErrConflict) {
		t.Fatalf("second Transition: got error %v, want a *ConflictError wrapping ErrConflict", err)
	}
	if ce.Got != Submitting || ce.ID != "r-1" || !reflect.DeepEqual(ce.Want, []State{Planned, Approved}) {
		t.Errorf("got %+v, want ID r-1, Got submitting, Want [planned approved]", ce)
	}
	if !strings.Contains(err.Error(), "submitting") {
		t.Errorf("got message %q, want it to name the actual state", err)
	}
	after, _ := b.Get(t.Context(), "r-1")
	if !reflect.DeepEqual(after, stored) {
		t.Errorf("after a conflict: got %+v, want unchanged %+v", after, stored)
	}

	if _, err := b.Transition(t.Context(), "nope", []State{Planned}, Cancelled, "U1", nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("Transition of a missing request: got error %v, want ErrNotFound", err)
	}
	if _, err := b.Transition(t.Context(), "r-1", nil, Cancelled, "U1", nil); err == nil || errors.Is(err, ErrConflict) {
		t.Errorf("Transition without from states: got error %v, want a non-conflict error", err)
	}
}

func testTransitionIf(t *testing.T, b backend) {
	mustCreate(t, b, Request{ID: "r-1", State: Submitted, Requester: "U1"})
	before, _ := b.Get(t.Context(), "r-1")

	// A refusing mutate writes nothing, whatever it changed first, and its
	// error comes back wrapped.
	errNo := errors.New("wave already sent")
	_, err := b.TransitionIf(t.Context(), "r-1", []State{Submitted}, Submitting, "U1", func(r *Request) error {
		r.ParentTS = "changed"
		return errNo
	})
	if !errors.Is(err, errNo) || errors.Is(err, ErrConflict) {
		t.Fatalf("refusing TransitionIf: got error %v, want one wrapping the mutate's error only", err)
	}
	if after, _ := b.Get(t.Context(), "r-1"); !reflect.DeepEqual(after, before) {
		t.Errorf("after a refusal: got %+v, want unchanged %+v", after, before)
	}

	// The state is checked before mutate runs.
	ran := false
	_, err = b.TransitionIf(t.Context(), "r-1", []State{Planned}, Submitting, "U1", func(*Request) error { ran = true; return nil })
	if _, ok := errors.AsType[*ConflictError](err); !ok || ran {
		t.Errorf("TransitionIf from the wrong state: got error %v and mutate run %v, want a *ConflictError and no run", err, ran)
	}

	got, err := b.TransitionIf(t.Context(), "r-1", []State{Submitted}, Paused, "U2", func(r *Request) error {
		r.Rollout = json.RawMessage(`{"paused":"canary failed"}`)
		return nil
	})
	if err != nil {
		t.Fatalf("accepting TransitionIf: got error %v, want nil", err)
	}
	if got.State != Paused || string(got.Rollout) != `{"paused":"canary failed"}` || len(got.History) != 1 || got.History[0].User != "U2" {
		t.Errorf("got %+v, want state paused, the rollout set and one event by U2", got)
	}
	if ids := listIDs(t.Context(), b, Paused); ids != "r-1" {
		t.Errorf("List(paused): got %q, want r-1", ids)
	}
}

func testRolloutAndPollClaimRoundTrip(t *testing.T, b backend) {
	rollout := json.RawMessage(`{"waves":[{"kind":"canary"}]}`)
	mustCreate(t, b, Request{ID: "r-1", State: Planned, Rollout: rollout})
	if r, err := b.Get(t.Context(), "r-1"); err != nil || string(r.Rollout) != string(rollout) {
		t.Errorf("Get: got rollout %s (error %v), want %s", r.Rollout, err, rollout)
	}
	if err := b.Create(t.Context(), Request{ID: "bad", Rollout: json.RawMessage("{")}); err == nil {
		t.Errorf("Create with invalid Rollout JSON: got nil error, want one")
	}
	until := time.Date(2026, 11, 28, 9, 0, 30, 0, time.UTC)
	if err := b.PutJob(t.Context(), Job{ID: "j1", RequestID: "r-1", PollBy: "claim-1", PollUntil: until}); err != nil {
		t.Fatalf("PutJob: got error %v, want nil", err)
	}
	if j, err := b.Job(t.Context(), "j1"); err != nil || j.PollBy != "claim-1" || !j.PollUntil.Equal(until) {
		t.Errorf("Job: got PollBy %q, PollUntil %v (error %v), want claim-1, %v", j.PollBy, j.PollUntil, err, until)
	}
}

func testTransitionConcurrentOneWinner(t *testing.T, b backend) {
	mustCreate(t, b, Request{ID: "r-1", State: Planned})

	const n = 100
	var wins, conflicts, others atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			_, err := b.Transition(t.Context(), "r-1", []State{Planned, Approved}, Submitting, fmt.Sprintf("U%d", i), nil)
			switch {
			case err == nil:
				wins.Add(1)
			case errors.Is(err, ErrConflict):
				conflicts.Add(1)
			default:
				others.Add(1)
				t.Errorf("Transition: got error %v, want nil or ErrConflict", err)
			}
		})
	}
	close(start)
	wg.Wait()
	if wins.Load() != 1 || conflicts.Load() != n-1 || others.Load() != 0 {
		t.Fatalf("got %d wins, %d conflicts, %d others; want 1, %d, 0", wins.Load(), conflicts.Load(), others.Load(), n-1)
	}
	r, _ := b.Get(t.Context(), "r-1")
	if len(r.History) != 1 {
		t.Errorf("got %d history events, want 1", len(r.History))
	}
}

func testUpdate(t *testing.T, b backend) {
	mustCreate(t, b, Request{ID: "r-1", State: Submitted})

	got, err := b.Update(t.Context(), "r-1", func(r *Request) error {
		r.Results = json.RawMessage(`[{"job_id":"j1"}]`)
		return nil
	})
	if err != nil {
		t.Fatalf("Update: got error %v, want nil", err)
	}
	if string(got.Results) != `[{"job_id":"j1"}]` || got.State != Submitted {
		t.Errorf("got %+v, want Results set and state submitted", got)
	}

	errStop := errors.New("stop")
	_, err = b.Update(t.Context(), "r-1", func(r *Request) error {
		r.Results = nil
		return errStop
	})
	if !errors.Is(err, errStop) {
		t.Errorf("Update with a failing mutate: got error %v, want errStop wrapped", err)
	}
	if r, _ := b.Get(t.Context(), "r-1"); string(r.Results) != `[{"job_id":"j1"}]` {
		t.Errorf("after an aborted Update: got Results %s, want unchanged", r.Results)
	}

	if _, err := b.Update(t.Context(), "r-1", func(r *Request) error { r.State = Done; return nil }); err == nil {
		t.Errorf("Update changing the state: got nil error, want one")
	}
	if r, _ := b.Get(t.Context(), "r-1"); r.State != Submitted {
		t.Errorf("after a refused Update: got state %s, want submitted", r.State)
	}
	if _, err := b.Update(t.Context(), "nope", func(*Request) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Errorf("Update of a missing request: got error %v, want ErrNotFound", err)
	}
}

func testList(t *testing.T, b backend) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// Created out of order on purpose; List orders by CreatedAt.
	for _, r := range []Request{
		{ID: "c", State: Planned, CreatedAt: base.Add(3 * time.Minute)},
		{ID: "a", State: Submitted, CreatedAt: base.Add(1 * time.Minute)},
		{ID: "d", State: Done, CreatedAt: base.Add(4 * time.Minute)},
		{ID: "b", State: Planned, CreatedAt: base.Add(2 * time.Minute)},
		{ID: "e", State: AwaitingApproval, CreatedAt: base.Add(2 * time.Minute)},
	} {
		mustCreate(t, b, r)
	}
	tests := []struct {
		name   string
		states []State
		want   []string
	}{
		{name: "all", states: nil, want: []string{"a", "b", "e", "c", "d"}},
		{name: "planned", states: []State{Planned}, want: []string{"b", "c"}},
		{name: "open", states: []State{Planned, AwaitingApproval, Submitted}, want: []string{"a", "b", "e", "c"}},
		{name: "none", states: []State{Expired}, want: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := b.List(t.Context(), tc.states...)
			if err != nil {
				t.Fatalf("List: got error %v, want nil", err)
			}
			var ids []string
			for _, r := range got {
				ids = append(ids, r.ID)
			}
			if !reflect.DeepEqual(ids, tc.want) {
				t.Errorf("got %v, want %v", ids, tc.want)
			}
		})
	}
}

func testJobs(t *testing.T, b backend) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	jobs := []Job{
		{ID: "j3", RequestID: "r-1", InstanceID: "i3", SubmittedAt: t0},
		{ID: "j1", RequestID: "r-1", InstanceID: "i1", SubmittedAt: t0.Add(time.Second)},
		{ID: "j2", RequestID: "r-1", InstanceID: "i2", SubmittedAt: t0, Reported: true},
		{ID: "j4", RequestID: "r-10", InstanceID: "i4", SubmittedAt: t0, GaveUp: true},
		{ID: "j5", RequestID: "r-2", InstanceID: "i5", SubmittedAt: t0.Add(-time.Second)},
	}
	for _, j := range jobs {
		if err := b.PutJob(t.Context(), j); err != nil {
			t.Fatalf("PutJob(%s): got error %v, want nil", j.ID, err)
		}
	}
	ids := func(js []Job) []string {
		var out []string
		for _, j := range js {
			out = append(out, j.ID)
		}
		return out
	}

	got, err := b.Jobs(t.Context(), "r-1")
	if err != nil {
		t.Fatalf("Jobs: got error %v, want nil", err)
	}
	if want := []string{"j2", "j3", "j1"}; !reflect.DeepEqual(ids(got), want) {
		t.Errorf("Jobs(r-1): got %v, want %v (r-10 is another request)", ids(got), want)
	}
	active, err := b.ActiveJobs(t.Context())
	if err != nil {
		t.Fatalf("ActiveJobs: got error %v, want nil", err)
	}
	if want := []string{"j5", "j3", "j1"}; !reflect.DeepEqual(ids(active), want) {
		t.Errorf("ActiveJobs: got %v, want %v", ids(active), want)
	}

	j, err := b.Job(t.Context(), "j1")
	if err != nil || !reflect.DeepEqual(j, jobs[1]) {
		t.Errorf("Job(j1): got %+v, %v; want %+v, nil", j, err, jobs[1])
	}
	if _, err := b.Job(t.Context(), "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Job(nope): got error %v, want ErrNotFound", err)
	}

	// Moving a job to another request moves it in the index too.
	moved := jobs[1]
	moved.RequestID = "r-2"
	if err := b.PutJob(t.Context(), moved); err != nil {
		t.Fatalf("PutJob: got error %v, want nil", err)
	}
	if got, _ := b.Jobs(t.Context(), "r-1"); !reflect.DeepEqual(ids(got), []string{"j2", "j3"}) {
		t.Errorf("Jobs(r-1) after the move: got %v, want [j2 j3]", ids(got))
	}
	if got, _ := b.Jobs(t.Context(), "r-2"); !reflect.DeepEqual(ids(got), []string{"j5", "j1"}) {
		t.Errorf("Jobs(r-2) after the move: got %v, want [j5 j1]", ids(got))
	}
	if got, err := b.Jobs(t.Context(), "none"); err != nil || len(got) != 0 {
		t.Errorf("Jobs(none): got %v, %v; want none", got, err)
	}
	if err := b.PutJob(t.Context(), Job{}); err == nil {
		t.Errorf("PutJob without ID: got nil error, want one")
	}
}

func testUpdateJobConcurrent(t *testing.T, b backend) {
	if err := b.PutJob(t.Context(), Job{ID: "j1", RequestID: "r-1", Status: "Running"}); err != nil {
		t.Fatalf("PutJob: got error %v, want nil", err)
	}

	// Read-modify-write is atomic: no increment is lost.
	const n = 50
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if _, err := b.UpdateJob(t.Context(), "j1", func(j *Job) error { j.PollErrors++; return nil }); err != nil {
				t.Errorf("UpdateJob: got error %v, want nil", err)
			}
		})
	}
	wg.Wait()
	if j, _ := b.Job(t.Context(), "j1"); j.PollErrors != n {
		t.Fatalf("got PollErrors %d, want %d", j.PollErrors, n)
	}

	// A sentinel from mutate tells the losers someone else reported the job.
	errAlready := errors.New("already reported")
	var winners atomic.Int32
	for range n {
		wg.Go(func() {
			_, err := b.UpdateJob(t.Context(), "j1", func(j *Job) error {
				if j.Reported {
					return errAlready
				}
				j.Reported, j.Status = true, "Completed"
				return nil
			})
			switch {
			case err == nil:
				winners.Add(1)
			case !errors.Is(err, errAlready):
				t.Errorf("UpdateJob: got error %v, want nil or errAlready", err)
			}
		})
	}
	wg.Wait()
	if winners.Load() != 1 {
		t.Fatalf("got %d reporters, want 1", winners.Load())
	}
	if _, err := b.UpdateJob(t.Context(), "nope", func(*Job) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Errorf("UpdateJob(nope): got error %v, want ErrNotFound", err)
	}
	if _, err := b.UpdateJob(t.Context(), "j1", func(j *Job) error { j.ID = "j2"; return nil }); err == nil {
		t.Errorf("UpdateJob changing the ID: got nil error, want one")
	}
}

// testJobIndexesFollowUpdateJob checks that UpdateJob, not only PutJob,
// keeps Jobs and ActiveJobs in step with the jobs it changes.
func testJobIndexesFollowUpdateJob(t *testing.T, b backend) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, j := range []Job{
		{ID: "j1", RequestID: "r-1", SubmittedAt: t0},
		{ID: "j2", RequestID: "r-1", SubmittedAt: t0.Add(time.Second)},
	} {
		if err := b.PutJob(t.Context(), j); err != nil {
			t.Fatalf("PutJob(%s): got error %v, want nil", j.ID, err)
		}
	}
	ids := func(js []Job, err error) string {
		if err != nil {
			return "error: " + err.Error()
		}
		var out []string
		for _, j := range js {
			out = append(out, j.ID)
		}
		return strings.Join(out, ",")
	}

	if _, err := b.UpdateJob(t.Context(), "j1", func(j *Job) error { j.Reported = true; return nil }); err != nil {
		t.Fatalf("UpdateJob: got error %v, want nil", err)
	}
	if got := ids(b.ActiveJobs(t.Context())); got != "j2" {
		t.Errorf("ActiveJobs after j1 was reported: got %s, want j2", got)
	}
	if _, err := b.UpdateJob(t.Context(), "j1", func(j *Job) error { j.Reported = false; return nil }); err != nil {
		t.Fatalf("UpdateJob: got error %v, want nil", err)
	}
	if got := ids(b.ActiveJobs(t.Context())); got != "j1,j2" {
		t.Errorf("ActiveJobs after j1 was un-reported: got %s, want j1,j2", got)
	}
	if _, err := b.UpdateJob(t.Context(), "j2", func(j *Job) error { j.GaveUp = true; j.RequestID = "r-2"; return nil }); err != nil {
		t.Fatalf("UpdateJob: got error %v, want nil", err)
	}
	if got := ids(b.ActiveJobs(t.Context())); got != "j1" {
		t.Errorf("ActiveJobs after giving up j2: got %s, want j1", got)
	}
	if got := ids(b.Jobs(t.Context(), "r-1")); got != "j1" {
		t.Errorf("Jobs(r-1) after moving j2: got %s, want j1", got)
	}
	if got := ids(b.Jobs(t.Context(), "r-2")); got != "j2" {
		t.Errorf("Jobs(r-2) after moving j2: got %s, want j2", got)
	}

	// An aborted UpdateJob changes no index either.
	errStop := errors.New("stop")
	if _, err := b.UpdateJob(t.Context(), "j1", func(j *Job) error { j.Reported = true; j.RequestID = "r-3"; return errStop }); !errors.Is(err, errStop) {
		t.Fatalf("UpdateJob with a failing mutate: got error %v, want errStop wrapped", err)
	}
	if got := ids(b.ActiveJobs(t.Context())); got != "j1" {
		t.Errorf("ActiveJobs after an aborted UpdateJob: got %s, want j1", got)
	}
	if got := ids(b.Jobs(t.Context(), "r-3")); got != "" {
		t.Errorf("Jobs(r-3) after an aborted UpdateJob: got %s, want none", got)
	}
}

// mustAllow calls b.Allow and fails the test on an error.
func mustAllow(t *testing.T, b backend, key string, limit int, window time.Duration) bool {
	t.Helper()
	ok, err := b.Allow(t.Context(), key, limit, window)
	if err != nil {
		t.Fatalf("Allow(%q, %d, %v): got error %v, want nil", key, limit, window, err)
	}
	return ok
}

// mustRemember calls b.Remember and fails the test on an error.
func mustRemember(t *testing.T, b backend, key string, ttl time.Duration) bool {
	t.Helper()
	ok, err := b.Remember(t.Context(), key, ttl)
	if err != nil {
		t.Fatalf("Remember(%q, %v): got error %v, want nil", key, ttl, err)
	}
	return ok
}

// testAllow checks fixed windows: limit hits are allowed from the first
// one, the window ends window after it whatever happened in between, and
// keys are independent.
func testAllow(t *testing.T, b backend, c *clock) {
	c.Freeze()
	const limit, window = 3, time.Minute
	step := func(what string, d time.Duration, key string, want ...bool) {
		t.Helper()
		c.Advance(d)
		for i, w := range want {
			if got := mustAllow(t, b, key, limit, window); got != w {
				t.Errorf("%s: hit %d of %s: got %v, want %v", what, i+1, key, got, w)
			}
		}
	}
	step("first window", 0, "u1", true, true)
	step("first window, 30s on", 30*time.Second, "u1", true, false, false)
	step("another key", 0, "u2", true, true, true, false)
	// Neither the allowed hit at 30s nor the refused ones extended the window.
	step("just before the window ends", 30*time.Second-time.Nanosecond, "u1", false)
	step("when the window ends", time.Nanosecond, "u1", true, true, true, false)
	// Each key has its own window: u2's began 30s after u1's.
	step("u2 before its window ends", 0, "u2", false)
	step("u2 when its window ends", 30*time.Second, "u2", true)
	step("a long pause", 10*time.Hour, "u1", true, true, true, false)

	// A limit of 1 allows one hit per window.
	step("limit 1", 0, "once", true)
	if mustAllow(t, b, "once", 1, window) {
		t.Errorf("second hit with limit 1: got true, want false")
	}
}

// testAllowConcurrent checks that concurrent hits never exceed the limit,
// per key, and that the next window allows the limit again.
func testAllowConcurrent(t *testing.T, b backend, c *clock) {
	c.Freeze()
	const n, limit = 100, 10
	round := func(what string) {
		t.Helper()
		allowed := map[string]*atomic.Int32{"u1": {}, "u2": {}}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range 2 * n {
			key := []string{"u1", "u2"}[i%2]
			wg.Go(func() {
				<-start
				ok, err := b.Allow(t.Context(), key, limit, time.Minute)
				if err != nil {
					t.Errorf("Allow(%s): got error %v, want nil", key, err)
				}
				if ok {
					allowed[key].Add(1)
				}
			})
		}
		close(start)
		wg.Wait()
		for key, a := range allowed {
			if a.Load() != limit {
				t.Errorf("%s: %d concurrent hits of %s: got %d allowed, want %d", what, n, key, a.Load(), limit)
			}
		}
	}
	round("first window")
	c.Advance(time.Minute)
	round("next window")
}

func testAllowArgs(t *testing.T, b backend) {
	for _, tc := range []struct {
		key    string
		limit  int
		window time.Duration
	}{
		{"", 1, time.Minute},
		{"k", 0, time.Minute},
		{"k", -1, time.Minute},
		{"k", 1, 0},
		{"k", 1, -time.Second},
	} {
		ok, err := b.Allow(t.Context(), tc.key, tc.limit, tc.window)
		if err == nil || ok {
			t.Errorf("Allow(%q, %d, %v): got %v, %v; want false and an error", tc.key, tc.limit, tc.window, ok, err)
		} else if !strings.Contains(err.Error(), fmt.Sprintf("allow %q", tc.key)) {
			t.Errorf("Allow(%q, %d, %v): got error %q, want it to say allow %q", tc.key, tc.limit, tc.window, err, tc.key)
		}
	}
	// The refused calls counted nothing.
	if !mustAllow(t, b, "k", 1, time.Minute) {
		t.Errorf("Allow(k, 1, 1m) after invalid calls: got false, want true")
	}
}

// testRemember checks that a key is new once per ttl, counted from the call
// that found it new, and that keys are independent.
func testRemember(t *testing.T, b backend, c *clock) {
	c.Freeze()
	const ttl = time.Minute
	step := func(what string, d time.Duration, key string, want ...bool) {
		t.Helper()
		c.Advance(d)
		for i, w := range want {
			if got := mustRemember(t, b, key, ttl); got != w {
				t.Errorf("%s: call %d for %s: got %v, want %v", what, i+1, key, got, w)
			}
		}
	}
	step("first", 0, "k", true, false, false)
	step("another key", 0, "other", true, false)
	// Repeats did not extend the ttl.
	step("30s on", 30*time.Second, "k", false)
	step("just before the ttl", 30*time.Second-time.Nanosecond, "k", false)
	step("when the ttl ends", time.Nanosecond, "k", true, false)
	step("other when its ttl ends", 0, "other", true)
	step("a long pause", 10*time.Hour, "k", true, false)
}

// testRememberConcurrent checks that of concurrent calls for a new key
// exactly one finds it new, also once it has expired.
func testRememberConcurrent(t *testing.T, b backend, c *clock) {
	c.Freeze()
	const n = 50
	round := func(what string) {
		t.Helper()
		var isNew atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range n {
			wg.Go(func() {
				<-start
				ok, err := b.Remember(t.Context(), "k", time.Minute)
				if err != nil {
					t.Errorf("Remember: got error %v, want nil", err)
				}
				if ok {
					isNew.Add(1)
				}
			})
		}
		close(start)
		wg.Wait()
		if isNew.Load() != 1 {
			t.Errorf("%s: %d concurrent calls: got %d new, want 1", what, n, isNew.Load())
		}
	}
	round("new key")
	c.Advance(time.Minute)
	round("expired key")
}

func testRememberArgs(t *testing.T, b backend) {
	for _, tc := range []struct {
		key string
		ttl time.Duration
	}{{"", time.Minute}, {"k", 0}, {"k", -time.Second}} {
		ok, err := b.Remember(t.Context(), tc.key, tc.ttl)
		if err == nil || ok {
			t.Errorf("Remember(%q, %v): got %v, %v; want false and an error", tc.key, tc.ttl, ok, err)
		} else if !strings.Contains(err.Error(), fmt.Sprintf("remember %q", tc.key)) {
			t.Errorf("Remember(%q, %v): got error %q, want it to say remember %q", tc.key, tc.ttl, err, tc.key)
		}
	}
	if !mustRemember(t, b, "k", time.Minute) {
		t.Errorf("Remember(k) after invalid calls: got false, want true")
	}
}

// The TTL is part of the swap when the caller makes it so: a mutate that
// finds the plan past ExpiresAt (as package patch's does) refuses the move
// with an *ExpiredError and nothing is written; the store itself applies
// no TTL, so the plan can still be cancelled or expired.
func testTransitionRespectsExpiry(t *testing.T, b backend, c *clock) {
	c.Freeze()
	expires := c.Now().Add(time.Minute)
	ttl := func(r *Request) error {
		if !c.Now().Before(r.ExpiresAt) {
			return &ExpiredError{ID: r.ID, ExpiresAt: r.ExpiresAt}
		}
		return nil
	}
	mustCreate(t, b, Request{ID: "r-1", State: Planned, ExpiresAt: expires})
	mustCreate(t, b, Request{ID: "r-2", State: AwaitingApproval, ExpiresAt: expires})
	if _, err := b.TransitionIf(t.Context(), "r-1", []State{Planned}, AwaitingApproval, "U1", ttl); err != nil {
		t.Fatalf("before expiry: got %v, want nil", err)
	}
	c.Advance(time.Minute)
	for _, to := range []State{Submitting, AwaitingApproval} {
		_, err := b.TransitionIf(t.Context(), "r-2", []State{AwaitingApproval}, to, "U1", ttl)
		var ee *ExpiredError
		if !errors.As(err, &ee) || !errors.Is(err, ErrConflict) || !ee.ExpiresAt.Equal(expires) {
			t.Errorf("to %s at expiry: got %v, want an *ExpiredError wrapping ErrConflict", to, err)
		}
	}
	if r, _ := b.Get(t.Context(), "r-2"); r.State != AwaitingApproval || len(r.History) != 0 {
		t.Errorf("after refused swaps: got %s with %d events, want awaiting_approval unchanged", r.State, len(r.History))
	}
	if _, err := b.Transition(t.Context(), "r-2", []State{AwaitingApproval}, Expired, "", nil); err != nil {
		t.Errorf("expiring an expired plan: got %v, want nil", err)
	}
}

// parallel runs fn(i) for every i in [0, n) on a few goroutines and fails
// the test on the first error. Stores are seeded this way so that their
// writes share commits.
func parallel(t *testing.T, n int, fn func(i int) error) {
	t.Helper()
	const workers = 32
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || failed.Load() != nil {
					return
				}
				if err := fn(i); err != nil {
					failed.CompareAndSwap(nil, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		t.Fatalf("seeding: %v", err)
	}
}

// listIDs returns the IDs List(states...) returns, comma-separated, or the
// error.
func listIDs(ctx context.Context, b backend, states ...State) string {
	rs, err := b.List(ctx, states...)
	if err != nil {
		return "error: " + err.Error()
	}
	var out []string
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return strings.Join(out, ",")
}

// testStateIndexFollowsWrites checks that List by state follows Create,
// Transition and Update, and that a refused transition moves nothing.
func testStateIndexFollowsWrites(t *testing.T, b backend) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, id := range []string{"a", "b", "c"} {
		mustCreate(t, b, Request{ID: id, State: Planned, CreatedAt: base.Add(time.Duration(i) * time.Minute)})
	}
	check := func(what string, want map[State]string) {
		t.Helper()
		for _, st := range []State{Planned, AwaitingApproval, Submitting, Submitted, Done, Cancelled, Stopped} {
			if got := listIDs(t.Context(), b, st); got != want[st] {
				t.Errorf("%s: List(%s): got %q, want %q", what, st, got, want[st])
			}
		}
	}
	check("created", map[State]string{Planned: "a,b,c"})

	move := func(id string, from, to State) {
		t.Helper()
		if _, err := b.Transition(t.Context(), id, []State{from}, to, "U1", nil); err != nil {
			t.Fatalf("Transition(%s, %s → %s): got error %v, want nil", id, from, to, err)
		}
	}
	move("b", Planned, AwaitingApproval)
	move("c", Planned, Submitting)
	check("after two transitions", map[State]string{Planned: "a", AwaitingApproval: "b", Submitting: "c"})

	if _, err := b.Transition(t.Context(), "a", []State{Submitted}, Done, "U1", nil); !errors.Is(err, ErrConflict) {
		t.Fatalf("Transition from the wrong state: got error %v, want ErrConflict", err)
	}
	if _, err := b.Update(t.Context(), "c", func(r *Request) error { r.ParentTS = "1.2"; return nil }); err != nil {
		t.Fatalf("Update: got error %v, want nil", err)
	}
	move("c", Submitting, Submitted)
	move("c", Submitted, Stopped)
	move("b", AwaitingApproval, Cancelled)
	if _, err := b.Update(t.Context(), "b", func(r *Request) error { r.Approver = "U2"; return nil }); err != nil {
		t.Fatalf("Update of a final request: got error %v, want nil", err)
	}
	check("after more", map[State]string{Planned: "a", Cancelled: "b", Stopped: "c"})
	if got := listIDs(t.Context(), b, Stopped, Planned, Cancelled, Planned); got != "a,b,c" {
		t.Errorf("List(stopped, planned, cancelled, planned): got %q, want a,b,c", got)
	}
	if got := listIDs(t.Context(), b); got != "a,b,c" {
		t.Errorf("List(): got %q, want a,b,c", got)
	}
}

// decodes returns how many records b decoded while fn ran.
func decodes(b backend, fn func()) int64 {
	before := b.Decoded()
	fn()
	return b.Decoded() - before
}

// testReadsCostWhatTheyReturn checks that List by state, ActiveJobs and
// Jobs read only the records they return, however many others the store
// holds.
func testReadsCostWhatTheyReturn(t *testing.T, b backend) {
	const past = 10_000
	parallel(t, past, func(i int) error {
		id := fmt.Sprintf("old-%05d", i)
		if err := b.Create(t.Context(), Request{ID: id, State: Done}); err != nil {
			return err
		}
		return b.PutJob(t.Context(), Job{ID: "j-" + id, RequestID: id, Status: "Completed", Reported: i%2 == 0, GaveUp: i%2 == 1})
	})
	for _, id := range []string{"p-1", "p-2", "p-3"} {
		mustCreate(t, b, Request{ID: id, State: Planned})
	}
	for _, id := range []string{"s-1", "s-2"} {
		mustCreate(t, b, Request{ID: id, State: Submitted})
		for k := range 2 {
			if err := b.PutJob(t.Context(), Job{ID: fmt.Sprintf("j-%s-%d", id, k), RequestID: id}); err != nil {
				t.Fatalf("PutJob: got error %v, want nil", err)
			}
		}
	}

	tests := []struct {
		name string
		read func() (int, error)
		want int
	}{
		{"List(planned)", func() (int, error) { rs, err := b.List(t.Context(), Planned); return len(rs), err }, 3},
		{"List(planned, submitted, planned)", func() (int, error) { rs, err := b.List(t.Context(), Planned, Submitted, Planned); return len(rs), err }, 5},
		{"List(expired)", func() (int, error) { rs, err := b.List(t.Context(), Expired); return len(rs), err }, 0},
		{"ActiveJobs", func() (int, error) { js, err := b.ActiveJobs(t.Context()); return len(js), err }, 4},
		{"Jobs(s-1)", func() (int, error) { js, err := b.Jobs(t.Context(), "s-1"); return len(js), err }, 2},
		{"Jobs(old-00007)", func() (int, error) { js, err := b.Jobs(t.Context(), "old-00007"); return len(js), err }, 1},
		{"Get(p-2)", func() (int, error) { _, err := b.Get(t.Context(), "p-2"); return 1, err }, 1},
	}
	for _, tc := range tests {
		var got int
		var err error
		n := decodes(b, func() { got, err = tc.read() })
		if err != nil || got != tc.want {
			t.Errorf("%s: got %d records, error %v; want %d, nil", tc.name, got, err, tc.want)
		}
		if n != int64(tc.want) {
			t.Errorf("%s with %d past requests and jobs: decoded %d records, want %d", tc.name, past, n, tc.want)
		}
	}
	if _, err := b.Transition(t.Context(), "p-1", []State{Planned}, Submitted, "U1", nil); err != nil {
		t.Fatalf("Transition: got error %v, want nil", err)
	}
	if n := decodes(b, func() { _, _ = b.List(t.Context(), Planned) }); n != 2 {
		t.Errorf("List(planned) after p-1 moved on: decoded %d records, want 2", n)
	}
	if got := len(mustList(t, b)); got != past+5 {
		t.Errorf("List(): got %d requests, want %d", got, past+5)
	}
}

// mustList calls b.List and fails the test on an error.
func mustList(t *testing.T, b backend, states ...State) []Request {
	t.Helper()
	rs, err := b.List(t.Context(), states...)
	if err != nil {
		t.Fatalf("List(%v): got error %v, want nil", states, err)
	}
	return rs
}

// mustPrune calls b.Prune and fails the test on an error.
func mustPrune(t *testing.T, b backend, before time.Time, max int) int {
	t.Helper()
	n, err := b.Prune(t.Context(), before, max)
	if err != nil {
		t.Fatalf("Prune(%v, %d): got error %v, want nil", before, max, err)
	}
	return n
}

// testPrune checks that Prune deletes requests in final states last updated
// before the given time, oldest first and at most max, with their jobs, and
// nothing else.
func testPrune(t *testing.T, b backend, c *clock) {
	c.Freeze()
	t0 := c.Now()
	// Requests that end, one a minute, in the order they are listed.
	ending := []struct {
		id  string
		end State
	}{{"done-1", Done}, {"cancelled", Cancelled}, {"rejected", Rejected}, {"expired", Expired}, {"stopped", Stopped}, {"done-2", Done}}
	for _, e := range ending {
		mustCreate(t, b, Request{ID: e.id, State: Submitted})
	}
	mustCreate(t, b, Request{ID: "planned", State: Planned})
	mustCreate(t, b, Request{ID: "submitted", State: Submitted})
	for _, j := range []Job{
		{ID: "j1", RequestID: "done-1", Reported: true},
		{ID: "j2", RequestID: "done-1", GaveUp: true},
		{ID: "j3", RequestID: "stopped", GaveUp: true},
		{ID: "j4", RequestID: "submitted"},
		{ID: "j5", RequestID: "done-2", Reported: true},
	} {
		if err := b.PutJob(t.Context(), j); err != nil {
			t.Fatalf("PutJob(%s): got error %v, want nil", j.ID, err)
		}
	}
	for _, e := range ending {
		c.Advance(time.Minute)
		if _, err := b.Transition(t.Context(), e.id, []State{Submitted}, e.end, "", nil); err != nil {
			t.Fatalf("Transition(%s): got error %v, want nil", e.id, err)
		}
	}
	// done-2 ended last, at t0+6m; an Update an hour later makes it recent.
	c.Advance(time.Hour)
	if _, err := b.Update(t.Context(), "done-2", func(r *Request) error { r.ParentTS = "1.2"; return nil }); err != nil {
		t.Fatalf("Update: got error %v, want nil", err)
	}
	cutoff := t0.Add(30 * time.Minute) // after every end, before the Update

	if n := mustPrune(t, b, cutoff, 0); n != 0 {
		t.Errorf("Prune(max 0): got %d deleted, want 0", n)
	}
	if n := mustPrune(t, b, t0.Add(time.Minute), 10); n != 0 {
		t.Errorf("Prune before the first end: got %d deleted, want 0 (UpdatedAt must be strictly before)", n)
	}
	if n := mustPrune(t, b, cutoff, 2); n != 2 {
		t.Fatalf("Prune(max 2): got %d deleted, want 2", n)
	}
	exists := func(id string) bool {
		t.Helper()
		_, err := b.Get(t.Context(), id)
		if err != nil && !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get(%s): got error %v, want nil or ErrNotFound", id, err)
		}
		return err == nil
	}
	for id, want := range map[string]bool{"done-1": false, "cancelled": false, "rejected": true} {
		if got := exists(id); got != want {
			t.Errorf("after Prune(max 2): %s exists %v, want %v (oldest first)", id, got, want)
		}
	}
	if n := mustPrune(t, b, cutoff, 10); n != 3 {
		t.Errorf("second Prune: got %d deleted, want 3", n)
	}
	if n := mustPrune(t, b, cutoff, 10); n != 0 {
		t.Errorf("third Prune: got %d deleted, want 0", n)
	}
	for _, id := range []string{"done-1", "cancelled", "rejected", "expired", "stopped"} {
		if exists(id) {
			t.Errorf("after pruning: %s exists, want it deleted", id)
		}
		if js, err := b.Jobs(t.Context(), id); err != nil || len(js) != 0 {
			t.Errorf("Jobs(%s) after pruning: got %v, %v; want none", id, js, err)
		}
	}
	for _, id := range []string{"done-2", "planned", "submitted"} {
		if !exists(id) {
			t.Errorf("after pruning: %s is gone, want it kept", id)
		}
	}
	for _, id := range []string{"j1", "j2", "j3"} {
		if _, err := b.Job(t.Context(), id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Job(%s) after its request was pruned: got error %v, want ErrNotFound", id, err)
		}
	}
	active, err := b.ActiveJobs(t.Context())
	if err != nil || len(active) != 1 || active[0].ID != "j4" {
		t.Errorf("ActiveJobs after pruning: got %v, %v; want j4", active, err)
	}
	if got := listIDs(t.Context(), b, Done, Cancelled, Rejected, Expired, Stopped); got != "done-2" {
		t.Errorf("List(final states) after pruning: got %q, want done-2", got)
	}

	// Long after, everything final goes, and nothing else ever does.
	c.Advance(1000 * time.Hour)
	if n := mustPrune(t, b, c.Now(), 100); n != 1 {
		t.Errorf("Prune of everything: got %d deleted, want 1 (done-2)", n)
	}
	if got := listIDs(t.Context(), b); got != "planned,submitted" {
		t.Errorf("List() after pruning everything: got %q, want planned,submitted", got)
	}
	if js, err := b.Jobs(t.Context(), "submitted"); err != nil || len(js) != 1 {
		t.Errorf("Jobs(submitted): got %v, %v; want j4", js, err)
	}
	// An ID can be used again once pruned.
	mustCreate(t, b, Request{ID: "done-1", State: Planned})
}

// testPruneCostFollowsDeleted checks that Prune reads no more than what it
// deletes, however many requests it keeps.
func testPruneCostFollowsDeleted(t *testing.T, b backend, c *clock) {
	c.Freeze()
	const kept = 2000
	// Old but not final, and final but recent: never candidates.
	parallel(t, kept, func(i int) error {
		return b.Create(t.Context(), Request{ID: fmt.Sprintf("open-%04d", i), State: Submitted})
	})
	const old = 150 // more than one transaction of Bolt's Prune
	parallel(t, old, func(i int) error {
		return b.Create(t.Context(), Request{ID: fmt.Sprintf("old-%03d", i), State: Expired})
	})
	c.Advance(time.Hour)
	cutoff := c.Now()
	parallel(t, kept, func(i int) error {
		return b.Create(t.Context(), Request{ID: fmt.Sprintf("recent-%04d", i), State: Done})
	})
	for _, want := range []int{100, old - 100, 0} {
		var n int
		read := decodes(b, func() { n = mustPrune(t, b, cutoff, 100) })
		if n != want {
			t.Errorf("Prune(max 100): got %d deleted, want %d", n, want)
		}
		if read > int64(n) {
			t.Errorf("Prune with %d requests kept decoded %d records, want at most the %d it deleted", 2*kept, read, n)
		}
	}
	if got := len(mustList(t, b)); got != 2*kept {
		t.Errorf("List() after pruning: got %d requests, want %d", got, 2*kept)
	}
}

// testPruneConcurrent runs several Prunes at once, while the jobs of the
// requests they delete are being updated: every request is deleted exactly
// once, and no job or index entry outlives its request.
func testPruneConcurrent(t *testing.T, b backend, c *clock) {
	const n = 200
	parallel(t, n, func(i int) error {
		id := fmt.Sprintf("r-%03d", i)
		if err := b.Create(t.Context(), Request{ID: id, State: Done}); err != nil {
			return err
		}
		return b.PutJob(t.Context(), Job{ID: "j-" + id, RequestID: id, Reported: true})
	})
	before := c.Now().Add(time.Hour)

	var deleted atomic.Int32
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			// Not Reported: a request with an active job is live and kept
			// (testPruneKeepsLiveWork).
			_, err := b.UpdateJob(t.Context(), fmt.Sprintf("j-r-%03d", i%n), func(j *Job) error { j.PollErrors++; return nil })
			if err != nil && !errors.Is(err, ErrNotFound) {
				t.Errorf("UpdateJob: got error %v, want nil or ErrNotFound", err)
			}
		}
	})
	var pruners sync.WaitGroup
	for range 4 {
		pruners.Go(func() {
			for {
				k, err := b.Prune(t.Context(), before, 7)
				if err != nil {
					t.Errorf("Prune: got error %v, want nil", err)
					return
				}
				deleted.Add(int32(k))
				if k == 0 {
					return
				}
			}
		})
	}
	pruners.Wait()
	close(stop)
	wg.Wait()
	if got := deleted.Load(); got != n {
		t.Errorf("got %d deleted in all, want %d", got, n)
	}
	if rs := mustList(t, b); len(rs) != 0 {
		t.Errorf("List() after pruning: got %d requests, want none", len(rs))
	}
	if js, err := b.ActiveJobs(t.Context()); err != nil || len(js) != 0 {
		t.Errorf("ActiveJobs after pruning: got %d jobs, %v; want none", len(js), err)
	}
	if _, err := b.Job(t.Context(), "j-r-007"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Job(j-r-007) after pruning: got error %v, want ErrNotFound", err)
	}
}

// Recent reads the newest requests of some states first, skips those keep
// refuses, and stops once it has n: its reads follow n, not history.
func testRecent(t *testing.T, b backend, c *clock) {
	for i := range 300 {
		st := Done
		switch i % 3 {
		case 1:
			st = Stopped
		case 2:
			st = Planned
		}
		mustCreate(t, b, Request{ID: fmt.Sprintf("r-%03d", i), State: st, Channel: fmt.Sprintf("C%d", i%2)})
	}
	before := b.Decoded()
	got, err := b.Recent(t.Context(), 4, func(r Request) bool { return r.Channel == "C1" }, Done, Stopped)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range got {
		ids = append(ids, r.ID)
	}
	want := []string{"r-297", "r-295", "r-291", "r-289"}
	if !reflect.DeepEqual(ids, want) {
		t.Errorf("Recent: got %v, want %v", ids, want)
	}
	if n := b.Decoded() - before; n > 2*recentPage+20 {
		t.Errorf("Recent decoded %d records of 300, want a few", n)
	}
	if got, _ := b.Recent(t.Context(), 0, nil, Done); len(got) != 0 {
		t.Errorf("Recent(0): got %d, want none", len(got))
	}
}

// testCancelledContext checks that every method given a context that has
// ended returns at once with an error wrapping the context's, and writes
// nothing.
func testCancelledContext(t *testing.T, b backend) {
	mustCreate(t, b, Request{ID: "r-1", State: Done})
	if err := b.PutJob(t.Context(), Job{ID: "j1", RequestID: "r-1"}); err != nil {
		t.Fatalf("PutJob: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	mutate := func(r *Request) error { r.Text = "changed"; return nil }
	calls := []struct {
		name string
		call func() error
	}{
		{"Create", func() error { return b.Create(ctx, Request{ID: "r-2", State: Planned}) }},
		{"Get", func() error { _, err := b.Get(ctx, "r-1"); return err }},
		{"Transition", func() error {
			_, err := b.Transition(ctx, "r-1", []State{Done}, Stopped, "U1", nil)
			return err
		}},
		{"TransitionIf", func() error {
			_, err := b.TransitionIf(ctx, "r-1", []State{Done}, Stopped, "U1", mutate)
			return err
		}},
		{"Update", func() error { _, err := b.Update(ctx, "r-1", mutate); return err }},
		{"List", func() error { _, err := b.List(ctx); return err }},
		{"ListStates", func() error { _, err := b.List(ctx, Done); return err }},
		{"PutJob", func() error { return b.PutJob(ctx, Job{ID: "j2", RequestID: "r-1"}) }},
		{"Job", func() error { _, err := b.Job(ctx, "j1"); return err }},
		{"UpdateJob", func() error {
			_, err := b.UpdateJob(ctx, "j1", func(j *Job) error { j.Reported = true; return nil })
			return err
		}},
		{"Jobs", func() error { _, err := b.Jobs(ctx, "r-1"); return err }},
		{"ActiveJobs", func() error { _, err := b.ActiveJobs(ctx); return err }},
		{"Allow", func() error { _, err := b.Allow(ctx, "U1", 1, time.Minute); return err }},
		{"Remember", func() error { _, err := b.Remember(ctx, "k1", time.Minute); return err }},
		{"Recent", func() error { _, err := b.Recent(ctx, 5, nil, Done); return err }},
		{"Prune", func() error { _, err := b.Prune(ctx, time.Now().Add(time.Hour), 10); return err }},
		{"Ping", func() error { return b.Ping(ctx) }},
	}
	for _, c := range calls {
		start := time.Now()
		err := c.call()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: got error %v, want one wrapping context.Canceled", c.name, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s with a cancelled context: returned after %v, want at once", c.name, d)
		}
	}
	if r, err := b.Get(t.Context(), "r-1"); err != nil || r.State != Done || r.Text != "" {
		t.Errorf("r-1 after the cancelled calls: got %+v, %v; want it unchanged (done, no text)", r, err)
	}
	if _, err := b.Get(t.Context(), "r-2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(r-2) after a cancelled Create: got error %v, want ErrNotFound", err)
	}
	if js, err := b.Jobs(t.Context(), "r-1"); err != nil || len(js) != 1 || js[0].Reported {
		t.Errorf("jobs after the cancelled calls: got %+v, %v; want j1 alone, unreported", js, err)
	}
	// The limit and the key were not spent by the cancelled calls.
	if !mustAllow(t, b, "U1", 1, time.Minute) {
		t.Error("Allow(U1) after a cancelled Allow: got refused, want allowed")
	}
	if !mustRemember(t, b, "k1", time.Minute) {
		t.Error("Remember(k1) after a cancelled Remember: got seen, want new")
	}
}
