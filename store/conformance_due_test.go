package store

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// mustOpenPlans calls b.OpenPlans and fails the test on an error.
func mustOpenPlans(t *testing.T, b backend, user string, now time.Time) int {
	t.Helper()
	n, err := b.OpenPlans(t.Context(), user, now)
	if err != nil {
		t.Fatalf("OpenPlans(%s): got error %v, want nil", user, err)
	}
	return n
}

// testOpenPlans checks that OpenPlans counts one person's plans waiting
// for a decision and not yet expired, following creates and transitions.
func testOpenPlans(t *testing.T, b backend, c *clock) {
	c.Freeze()
	now := c.Now()
	for _, r := range []Request{
		{ID: "u1-a", State: Planned, Requester: "U1", ExpiresAt: now.Add(time.Minute)},
		{ID: "u1-b", State: AwaitingApproval, Requester: "U1", ExpiresAt: now.Add(2 * time.Minute)},
		{ID: "u1-c", State: Planned, Requester: "U1", ExpiresAt: now.Add(-time.Second)}, // expired, not yet moved
		{ID: "u1-d", State: Planned, Requester: "U1"},                                   // no expiry: never counted (as before)
		{ID: "u1-e", State: Submitted, Requester: "U1", ExpiresAt: now.Add(time.Hour)},
		{ID: "u2-a", State: Planned, Requester: "U2", ExpiresAt: now.Add(time.Minute)},
		{ID: "u10-a", State: Planned, Requester: "U10", ExpiresAt: now.Add(time.Minute)},
	} {
		mustCreate(t, b, r)
	}
	for user, want := range map[string]int{"U1": 2, "U2": 1, "U10": 1, "U3": 0, "U": 0} {
		if got := mustOpenPlans(t, b, user, now); got != want {
			t.Errorf("OpenPlans(%s): got %d, want %d", user, got, want)
		}
	}
	if got := mustOpenPlans(t, b, "U1", now.Add(time.Minute)); got != 1 {
		t.Errorf("OpenPlans(U1) a minute later: got %d, want 1 (u1-a expires then)", got)
	}
	if _, err := b.Transition(t.Context(), "u1-a", []State{Planned}, AwaitingApproval, "U1", nil); err != nil {
		t.Fatalf("Transition: got error %v, want nil", err)
	}
	if got := mustOpenPlans(t, b, "U1", now); got != 2 {
		t.Errorf("OpenPlans(U1) after planned → awaiting approval: got %d, want 2", got)
	}
	if _, err := b.Transition(t.Context(), "u1-b", []State{AwaitingApproval}, Cancelled, "U1", nil); err != nil {
		t.Fatalf("Transition: got error %v, want nil", err)
	}
	if _, err := b.Update(t.Context(), "u1-a", func(r *Request) error { r.ExpiresAt = now.Add(-time.Minute); return nil }); err != nil {
		t.Fatalf("Update: got error %v, want nil", err)
	}
	if got := mustOpenPlans(t, b, "U1", now); got != 0 {
		t.Errorf("OpenPlans(U1) after a cancel and an expiry moved back: got %d, want 0", got)
	}
	c.Advance(1000 * time.Hour)
	if _, err := b.Transition(t.Context(), "u2-a", []State{Planned}, Expired, "", nil); err != nil {
		t.Fatalf("Transition: got error %v, want nil", err)
	}
	if n := mustPrune(t, b, c.Now().Add(time.Second), 100); n != 2 {
		t.Errorf("Prune: got %d, want 2", n)
	}
	if got := mustOpenPlans(t, b, "U2", now); got != 0 {
		t.Errorf("OpenPlans(U2) after expiry and prune: got %d, want 0", got)
	}
}

// testOpenPlansCost checks the scaling property of issue 20: counting one
// person's open plans decodes no record, with 1 open plan in the store as
// with 1,000 from 1,000 people.
func testOpenPlansCost(t *testing.T, b backend, c *clock) {
	c.Freeze()
	exp := c.Now().Add(time.Hour)
	mustCreate(t, b, Request{ID: "p-0000", State: Planned, Requester: "U0000", ExpiresAt: exp})
	var n1, n1000 int
	one := decodes(b, func() { n1 = mustOpenPlans(t, b, "U0000", c.Now()) })
	parallel(t, 999, func(i int) error {
		return b.Create(t.Context(), Request{ID: fmt.Sprintf("p-%04d", i+1), State: Planned, Requester: fmt.Sprintf("U%04d", i+1), ExpiresAt: exp})
	})
	thousand := decodes(b, func() { n1000 = mustOpenPlans(t, b, "U0000", c.Now()) })
	if n1 != 1 || n1000 != 1 {
		t.Errorf("OpenPlans(U0000): got %d with 1 open plan and %d with 1,000, want 1 and 1", n1, n1000)
	}
	if one != 0 || thousand != one {
		t.Errorf("OpenPlans decoded %d records with 1 open plan and %d with 1,000; want 0 and 0", one, thousand)
	}
}

// ids of requests or jobs, comma-separated, in the order given.
func joinIDs[T Request | Job](xs []T) string { return strings.Join(ids(xs), ",") }

// testDue checks that Due returns the requests whose DueAt has come,
// earliest first, and follows writes.
func testDue(t *testing.T, b backend, c *clock) {
	c.Freeze()
	t0 := c.Now()
	for _, r := range []Request{
		{ID: "plan-soon", State: Planned, ExpiresAt: t0.Add(time.Minute)},
		{ID: "plan-late", State: AwaitingApproval, ExpiresAt: t0.Add(time.Hour)},
		{ID: "plan-woken", State: Planned, ExpiresAt: t0.Add(time.Hour), WakeAt: t0.Add(2 * time.Minute)},
		{ID: "lease", State: Submitting, LeaseUntil: t0.Add(3 * time.Minute)},
		{ID: "window", State: Submitted, WakeAt: t0.Add(4 * time.Minute)},
		{ID: "waiting", State: Submitted},                       // waits for its jobs: never due by time
		{ID: "answers", State: Submitted, ResultsPending: true}, // owed now
		{ID: "done", State: Done},
		{ID: "paused", State: Paused},
	} {
		mustCreate(t, b, r)
	}
	due := func(at time.Time, max int) string {
		t.Helper()
		rs, err := b.Due(t.Context(), at, max)
		if err != nil {
			t.Fatalf("Due: got error %v, want nil", err)
		}
		return joinIDs(rs)
	}
	for _, tc := range []struct {
		at   time.Duration
		max  int
		want string
	}{
		{0, 0, "answers"},
		{time.Minute, 0, "answers,plan-soon"},
		{5 * time.Minute, 0, "answers,plan-soon,plan-woken,lease,window"},
		{5 * time.Minute, 2, "answers,plan-soon"},
		{2 * time.Hour, 0, "answers,plan-soon,plan-woken,lease,window,plan-late"},
	} {
		if got := due(t0.Add(tc.at), tc.max); got != tc.want {
			t.Errorf("Due(t0+%v, max %d): got %q, want %q", tc.at, tc.max, got, tc.want)
		}
	}
	// Writes move what is due: an expiry, a renewed lease, a cleared wake,
	// the answers posted.
	if _, err := b.Transition(t.Context(), "plan-soon", []State{Planned}, Expired, "", nil); err != nil {
		t.Fatalf("Transition: got error %v, want nil", err)
	}
	for id, fn := range map[string]func(*Request){
		"lease":   func(r *Request) { r.LeaseUntil = t0.Add(time.Hour) },
		"window":  func(r *Request) { r.WakeAt = time.Time{} },
		"answers": func(r *Request) { r.ResultsPending = false },
		"waiting": func(r *Request) { r.WakeAt = t0 },
	} {
		if _, err := b.Update(t.Context(), id, func(r *Request) error { fn(r); return nil }); err != nil {
			t.Fatalf("Update(%s): got error %v, want nil", id, err)
		}
	}
	if got, want := due(t0.Add(5*time.Minute), 0), "waiting,plan-woken"; got != want {
		t.Errorf("Due(t0+5m) after the writes: got %q, want %q", got, want)
	}
}

// testDueCost checks the scaling property of issue 20 for housekeeping: a
// read of what is due decodes what it returns, however many plans are
// open and not due.
func testDueCost(t *testing.T, b backend, c *clock) {
	c.Freeze()
	now := c.Now()
	mustCreate(t, b, Request{ID: "due", State: Planned, ExpiresAt: now.Add(-time.Second)})
	read := func() (int, int64) {
		var n int
		d := decodes(b, func() {
			rs, err := b.Due(t.Context(), now, 0)
			if err != nil {
				t.Fatalf("Due: got error %v, want nil", err)
			}
			n = len(rs)
		})
		return n, d
	}
	n0, d0 := read()
	parallel(t, 1000, func(i int) error {
		return b.Create(t.Context(), Request{ID: fmt.Sprintf("p-%04d", i), State: Planned, Requester: fmt.Sprintf("U%04d", i), ExpiresAt: now.Add(time.Hour)})
	})
	parallel(t, 200, func(i int) error {
		id := fmt.Sprintf("s-%03d", i)
		if err := b.Create(t.Context(), Request{ID: id, State: Submitted}); err != nil {
			return err
		}
		return b.PutJob(t.Context(), Job{ID: "j-" + id, RequestID: id, NextPoll: now.Add(time.Minute)})
	})
	n1, d1 := read()
	if n0 != 1 || n1 != 1 || d0 != 1 || d1 != 1 {
		t.Errorf("Due: got %d requests decoding %d records alone, %d decoding %d with 1,200 not due; want 1 and 1 each", n0, d0, n1, d1)
	}
	var jobs int
	dj := decodes(b, func() {
		js, err := b.DueJobs(t.Context(), now, 0)
		if err != nil {
			t.Fatalf("DueJobs: got error %v, want nil", err)
		}
		jobs = len(js)
	})
	if jobs != 0 || dj != 0 {
		t.Errorf("DueJobs with 200 jobs not due: got %d, decoding %d; want 0, 0", jobs, dj)
	}
}

// testDueJobs checks that DueJobs returns the active jobs whose NextPoll
// has come (a new job at once), earliest first, and follows UpdateJob.
func testDueJobs(t *testing.T, b backend, c *clock) {
	c.Freeze()
	t0 := c.Now()
	for _, j := range []Job{
		{ID: "new", RequestID: "r"},
		{ID: "soon", RequestID: "r", NextPoll: t0.Add(time.Minute)},
		{ID: "late", RequestID: "r", NextPoll: t0.Add(time.Hour)},
		{ID: "reported", RequestID: "r", Reported: true},
		{ID: "gaveup", RequestID: "r", GaveUp: true},
	} {
		if err := b.PutJob(t.Context(), j); err != nil {
			t.Fatalf("PutJob(%s): got error %v, want nil", j.ID, err)
		}
	}
	due := func(at time.Time) string {
		t.Helper()
		js, err := b.DueJobs(t.Context(), at, 0)
		if err != nil {
			t.Fatalf("DueJobs: got error %v, want nil", err)
		}
		return joinIDs(js)
	}
	if got := due(t0); got != "new" {
		t.Errorf("DueJobs(t0): got %q, want new", got)
	}
	if got := due(t0.Add(2 * time.Hour)); got != "new,soon,late" {
		t.Errorf("DueJobs(t0+2h): got %q, want new,soon,late", got)
	}
	if _, err := b.UpdateJob(t.Context(), "new", func(j *Job) error { j.NextPoll = t0.Add(2 * time.Minute); return nil }); err != nil {
		t.Fatalf("UpdateJob: got error %v, want nil", err)
	}
	if _, err := b.UpdateJob(t.Context(), "soon", func(j *Job) error { j.Reported = true; return nil }); err != nil {
		t.Fatalf("UpdateJob: got error %v, want nil", err)
	}
	if got := due(t0.Add(5 * time.Minute)); got != "new" {
		t.Errorf("DueJobs(t0+5m) after the updates: got %q, want new", got)
	}
}

// testPruneKeepsLiveWork checks issue 19's "retention never deletes live
// work": a stopped request whose canary job still runs, and a final
// request holding an instance lock, are kept until that ends.
func testPruneKeepsLiveWork(t *testing.T, b backend, c *clock) {
	c.Freeze()
	mustCreate(t, b, Request{ID: "stopped", State: Stopped})
	if err := b.PutJob(t.Context(), Job{ID: "canary", RequestID: "stopped", Status: "Running"}); err != nil {
		t.Fatalf("PutJob: got error %v, want nil", err)
	}
	mustCreate(t, b, Request{ID: "locked", State: Submitted})
	if _, err := b.TransitionLock(t.Context(), "locked", []State{Submitted}, Done, "", nil, func(*Request, map[string]string) ([]string, error) {
		return []string{"t/i-1"}, nil
	}); err != nil {
		t.Fatalf("TransitionLock: got error %v, want nil", err)
	}
	mustCreate(t, b, Request{ID: "dead", State: Done})
	c.Advance(time.Hour)
	if n := mustPrune(t, b, c.Now(), 10); n != 1 {
		t.Errorf("Prune: got %d deleted, want 1 (only dead)", n)
	}
	for _, id := range []string{"stopped", "locked"} {
		if _, err := b.Get(t.Context(), id); err != nil {
			t.Errorf("Get(%s) after Prune: got error %v, want it kept", id, err)
		}
	}
	if n := mustPrune(t, b, c.Now(), 1); n != 0 {
		t.Errorf("Prune(max 1) with only live final requests: got %d, want 0", n)
	}
	if _, err := b.UpdateJob(t.Context(), "canary", func(j *Job) error { j.Status, j.Reported = "Completed", true; return nil }); err != nil {
		t.Fatalf("UpdateJob: got error %v, want nil", err)
	}
	if err := b.Unlock(t.Context(), "locked", nil); err != nil {
		t.Fatalf("Unlock: got error %v, want nil", err)
	}
	if n := mustPrune(t, b, c.Now(), 10); n != 2 {
		t.Errorf("Prune after the canary was reported and the lock released: got %d, want 2", n)
	}
	if _, err := b.Job(t.Context(), "canary"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Job(canary) after its request was pruned: got error %v, want ErrNotFound", err)
	}
}

// takeAll is a TransitionLock mutate that takes keys whoever holds them.
func takeAll(keys ...string) func(*Request, map[string]string) ([]string, error) {
	return func(*Request, map[string]string) ([]string, error) { return keys, nil }
}

// testLocks checks TransitionLock, Unlock, LockHolders and Locks.
func testLocks(t *testing.T, b backend) {
	for _, id := range []string{"r-1", "r-2"} {
		mustCreate(t, b, Request{ID: id, State: Approved})
	}
	var seen map[string]string
	r, err := b.TransitionLock(t.Context(), "r-1", []State{Approved}, Submitting, "U1", []string{"t/a", "t/b"}, func(r *Request, held map[string]string) ([]string, error) {
		seen = maps.Clone(held)
		r.Owner = "me"
		return []string{"t/a", "t/b"}, nil
	})
	if err != nil || r.State != Submitting || r.Owner != "me" {
		t.Fatalf("TransitionLock(r-1): got %+v, %v; want submitting with Owner me", r, err)
	}
	if len(seen) != 0 {
		t.Errorf("TransitionLock(r-1): mutate saw held %v, want none", seen)
	}
	// r-2 sees r-1's locks and loses the ones it still asks for.
	_, err = b.TransitionLock(t.Context(), "r-2", []State{Approved}, Submitting, "U2", []string{"t/b", "t/c"}, func(r *Request, held map[string]string) ([]string, error) {
		seen = maps.Clone(held)
		return []string{"t/b", "t/c"}, nil
	})
	le, ok := errors.AsType[*LockedError](err)
	if !ok || !errors.Is(err, ErrConflict) || !errors.Is(err, ErrLocked) || !maps.Equal(le.Held, map[string]string{"t/b": "r-1"}) {
		t.Errorf("TransitionLock(r-2) of a held key: got error %v, want a *LockedError for t/b by r-1, ErrConflict and ErrLocked", err)
	}
	if !maps.Equal(seen, map[string]string{"t/b": "r-1"}) {
		t.Errorf("TransitionLock(r-2): mutate saw held %v, want t/b by r-1", seen)
	}
	if got, _ := b.Get(t.Context(), "r-2"); got.State != Approved {
		t.Errorf("r-2 after its refused TransitionLock: got state %s, want approved (nothing written)", got.State)
	}
	// A key mutate returns that was not asked about is checked too.
	if _, err := b.TransitionLock(t.Context(), "r-2", []State{Approved}, Submitting, "U2", []string{"t/c"}, takeAll("t/c", "t/a")); !errors.Is(err, ErrLocked) {
		t.Errorf("TransitionLock(r-2) returning an unasked held key: got error %v, want ErrLocked", err)
	}
	// A wrong state is a ConflictError, as with Transition.
	if _, err := b.TransitionLock(t.Context(), "r-2", []State{Planned}, Submitting, "U2", nil, takeAll("t/z")); !errors.As(err, new(*ConflictError)) {
		t.Errorf("TransitionLock from a wrong state: got error %v, want a *ConflictError", err)
	}
	if _, err := b.TransitionLock(t.Context(), "r-2", []State{Approved}, Submitting, "U2", []string{"t/c"}, takeAll("t/c")); err != nil {
		t.Fatalf("TransitionLock(r-2, t/c): got error %v, want nil", err)
	}
	// A key r-1 already holds is kept when asked for again.
	if _, err := b.TransitionLock(t.Context(), "r-1", []State{Submitting}, Submitted, "", []string{"t/a"}, takeAll("t/a")); err != nil {
		t.Fatalf("TransitionLock(r-1) of its own key: got error %v, want nil", err)
	}
	holders := func() map[string]string {
		t.Helper()
		h, err := b.LockHolders(t.Context(), []string{"t/a", "t/b", "t/c", "t/d"})
		if err != nil {
			t.Fatalf("LockHolders: got error %v, want nil", err)
		}
		return h
	}
	if got, want := holders(), map[string]string{"t/a": "r-1", "t/b": "r-1", "t/c": "r-2"}; !maps.Equal(got, want) {
		t.Errorf("LockHolders: got %v, want %v", got, want)
	}
	if got, err := b.Locks(t.Context(), "r-1"); err != nil || !slices.Equal(got, []string{"t/a", "t/b"}) {
		t.Errorf("Locks(r-1): got %v, %v; want t/a, t/b", got, err)
	}
	// Unlock releases only the caller's keys.
	if err := b.Unlock(t.Context(), "r-2", []string{"t/a", "t/c"}); err != nil {
		t.Fatalf("Unlock(r-2): got error %v, want nil", err)
	}
	if got, want := holders(), map[string]string{"t/a": "r-1", "t/b": "r-1"}; !maps.Equal(got, want) {
		t.Errorf("LockHolders after Unlock(r-2): got %v, want %v", got, want)
	}
	if err := b.Unlock(t.Context(), "r-1", nil); err != nil {
		t.Fatalf("Unlock(r-1, all): got error %v, want nil", err)
	}
	if got := holders(); len(got) != 0 {
		t.Errorf("LockHolders after releasing everything: got %v, want none", got)
	}
	if got, err := b.Locks(t.Context(), "r-1"); err != nil || len(got) != 0 {
		t.Errorf("Locks(r-1) after Unlock: got %v, %v; want none", got, err)
	}
	if _, err := b.TransitionLock(t.Context(), "r-1", []State{Submitted}, Done, "", nil, takeAll("")); err == nil {
		t.Errorf("TransitionLock taking an empty key: got nil error, want one")
	}
}

// testLocksConcurrent races requests for the same instances, each asking
// for all of them: exactly one wins, and every loser gets a *LockedError.
func testLocksConcurrent(t *testing.T, b backend) {
	const racers, rounds = 8, 10
	for round := range rounds {
		keys := []string{fmt.Sprintf("t/%d-a", round), fmt.Sprintf("t/%d-b", round)}
		for i := range racers {
			mustCreate(t, b, Request{ID: fmt.Sprintf("r-%d-%d", round, i), State: Approved})
		}
		errs := make([]error, racers)
		var wg sync.WaitGroup
		for i := range racers {
			wg.Go(func() {
				_, errs[i] = b.TransitionLock(t.Context(), fmt.Sprintf("r-%d-%d", round, i), []State{Approved}, Submitting, "", keys, func(_ *Request, held map[string]string) ([]string, error) {
					return keys, nil
				})
			})
		}
		wg.Wait()
		winner := ""
		for i, err := range errs {
			switch {
			case err == nil:
				if winner != "" {
					t.Errorf("round %d: both %s and r-%d-%d won", round, winner, round, i)
				}
				winner = fmt.Sprintf("r-%d-%d", round, i)
			case !errors.As(err, new(*LockedError)):
				t.Errorf("round %d: r-%d-%d lost with %v, want a *LockedError", round, round, i, err)
			}
		}
		h, err := b.LockHolders(t.Context(), keys)
		if err != nil || winner == "" || !maps.Equal(h, map[string]string{keys[0]: winner, keys[1]: winner}) {
			t.Errorf("round %d: holders %v, %v; want both keys held by the one winner %q", round, h, err, winner)
		}
	}
}

// testLocksSkipHeld races requests over overlapping instances, each taking
// what is not held by another (as a wave skips an instance being patched):
// every key ends up with exactly one holder, and no request took a key it
// was told was held.
func testLocksSkipHeld(t *testing.T, b backend) {
	const racers, instances = 8, 12
	all := make([]string, instances)
	for i := range all {
		all[i] = fmt.Sprintf("t/i-%02d", i)
	}
	for i := range racers {
		mustCreate(t, b, Request{ID: fmt.Sprintf("r-%d", i), State: Approved})
	}
	var wg sync.WaitGroup
	errs := make([]error, racers)
	for i := range racers {
		wg.Go(func() {
			// Each wants a window of 6 instances, overlapping its neighbours'.
			want := all[i%instances : min(i%instances+6, instances)]
			_, errs[i] = b.TransitionLock(t.Context(), fmt.Sprintf("r-%d", i), []State{Approved}, Submitting, "", want, func(r *Request, held map[string]string) ([]string, error) {
				var take []string
				for _, k := range want {
					if _, ok := held[k]; !ok {
						take = append(take, k)
					}
				}
				return take, nil
			})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("r-%d: got error %v, want nil (held keys are skipped)", i, err)
		}
	}
	h, err := b.LockHolders(t.Context(), all)
	if err != nil {
		t.Fatalf("LockHolders: got error %v, want nil", err)
	}
	owned := map[string]string{}
	for i := range racers {
		id := fmt.Sprintf("r-%d", i)
		keys, err := b.Locks(t.Context(), id)
		if err != nil {
			t.Fatalf("Locks(%s): got error %v, want nil", id, err)
		}
		for _, k := range keys {
			if o, ok := owned[k]; ok {
				t.Errorf("key %s is held by both %s and %s", k, o, id)
			}
			owned[k] = id
		}
	}
	if !maps.Equal(owned, h) {
		t.Errorf("Locks of every request give %v, LockHolders %v; want the same", owned, h)
	}
	if len(h) != racers-1+6 && len(h) < 6 {
		t.Errorf("LockHolders: got %d keys held, want at least 6", len(h))
	}
}
