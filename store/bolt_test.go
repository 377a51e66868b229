package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// clock is a fake time source that advances one second per reading, so that
// ordering by time is deterministic.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock {
	return &clock{t: time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)}
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

// setup opens a store in a new temporary directory, closed at cleanup.
func setup(t *testing.T) (*Bolt, *clock) {
	t.Helper()
	c := newClock()
	b, err := OpenWith(filepath.Join(t.TempDir(), "test.db"), Options{Now: c.Now})
	if err != nil {
		t.Fatalf("OpenWith: got error %v, want nil", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b, c
}

func mustCreate(t *testing.T, b *Bolt, r Request) {
	t.Helper()
	if err := b.Create(r); err != nil {
		t.Fatalf("Create(%s): got error %v, want nil", r.ID, err)
	}
}

func TestStateFinal(t *testing.T) {
	t.Parallel()
	final := map[State]bool{Done: true, Cancelled: true, Rejected: true, Expired: true}
	for _, s := range []State{Planned, AwaitingApproval, Approved, Submitting, Submitted, Done, Cancelled, Rejected, Expired} {
		if got := s.Final(); got != final[s] {
			t.Errorf("%s.Final(): got %v, want %v", s, got, final[s])
		}
	}
}

func TestCreateGet(t *testing.T) {
	t.Parallel()
	b, _ := setup(t)
	want := Request{
		ID:        "r-1",
		State:     Planned,
		Requester: "U1",
		Channel:   "C1",
		Text:      "db1 db2 --dry-run",
		Plan:      json.RawMessage(`{"targets":[{"ref":"db1"}]}`),
		DryRun:    true,
		ExpiresAt: time.Date(2026, 11, 28, 9, 15, 0, 0, time.UTC),
	}
	mustCreate(t, b, want)
	got, err := b.Get("r-1")
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

	if err := b.Create(Request{ID: "r-1", State: Planned}); !errors.Is(err, ErrExists) {
		t.Errorf("Create of a taken ID: got error %v, want ErrExists", err)
	}
	if _, err := b.Get("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(nope): got error %v, want ErrNotFound", err)
	}
	if err := b.Create(Request{}); err == nil {
		t.Errorf("Create without ID: got nil error, want one")
	}
	if err := b.Create(Request{ID: "bad", Plan: json.RawMessage("{")}); err == nil {
		t.Errorf("Create with invalid Plan JSON: got nil error, want one")
	}
}

func TestTransition(t *testing.T) {
	t.Parallel()
	b, _ := setup(t)
	mustCreate(t, b, Request{ID: "r-1", State: Planned, Requester: "U1"})
	before, _ := b.Get("r-1")

	got, err := b.Transition("r-1", []State{Planned, Approved}, Submitting, "U1", func(r *Request) {
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
	stored, _ := b.Get("r-1")
	if !reflect.DeepEqual(stored, got) {
		t.Errorf("got stored %+v, want the returned %+v", stored, got)
	}

	// A second attempt loses and changes nothing.
	_, err = b.Transition("r-1", []State{Planned, Approved}, Submitting, "U2", func(r *Request) { r.ParentTS = "x" })
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
	after, _ := b.Get("r-1")
	if !reflect.DeepEqual(after, stored) {
		t.Errorf("after a conflict: got %+v, want unchanged %+v", after, stored)
	}

	if _, err := b.Transition("nope", []State{Planned}, Cancelled, "U1", nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("Transition of a missing request: got error %v, want ErrNotFound", err)
	}
	if _, err := b.Transition("r-1", nil, Cancelled, "U1", nil); err == nil || errors.Is(err, ErrConflict) {
		t.Errorf("Transition without from states: got error %v, want a non-conflict error", err)
	}
}

func TestTransitionConcurrentOneWinner(t *testing.T) {
	t.Parallel()
	b, _ := setup(t)
	mustCreate(t, b, Request{ID: "r-1", State: Planned})

	const n = 100
	var wins, conflicts, others atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			_, err := b.Transition("r-1", []State{Planned, Approved}, Submitting, fmt.Sprintf("U%d", i), nil)
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
	r, _ := b.Get("r-1")
	if len(r.History) != 1 {
		t.Errorf("got %d history events, want 1", len(r.History))
	}
}

func TestUpdate(t *testing.T) {
	t.Parallel()
	b, _ := setup(t)
	mustCreate(t, b, Request{ID: "r-1", State: Submitted})

	got, err := b.Update("r-1", func(r *Request) error {
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
	_, err = b.Update("r-1", func(r *Request) error {
		r.Results = nil
		return errStop
	})
	if !errors.Is(err, errStop) {
		t.Errorf("Update with a failing mutate: got error %v, want errStop wrapped", err)
	}
	if r, _ := b.Get("r-1"); string(r.Results) != `[{"job_id":"j1"}]` {
		t.Errorf("after an aborted Update: got Results %s, want unchanged", r.Results)
	}

	if _, err := b.Update("r-1", func(r *Request) error { r.State = Done; return nil }); err == nil {
		t.Errorf("Update changing the state: got nil error, want one")
	}
	if r, _ := b.Get("r-1"); r.State != Submitted {
		t.Errorf("after a refused Update: got state %s, want submitted", r.State)
	}
	if _, err := b.Update("nope", func(*Request) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Errorf("Update of a missing request: got error %v, want ErrNotFound", err)
	}
}

func TestList(t *testing.T) {
	t.Parallel()
	b, _ := setup(t)
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
			got, err := b.List(tc.states...)
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

func TestJobs(t *testing.T) {
	t.Parallel()
	b, _ := setup(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	jobs := []Job{
		{ID: "j3", RequestID: "r-1", InstanceID: "i3", SubmittedAt: t0},
		{ID: "j1", RequestID: "r-1", InstanceID: "i1", SubmittedAt: t0.Add(time.Second)},
		{ID: "j2", RequestID: "r-1", InstanceID: "i2", SubmittedAt: t0, Reported: true},
		{ID: "j4", RequestID: "r-10", InstanceID: "i4", SubmittedAt: t0, GaveUp: true},
		{ID: "j5", RequestID: "r-2", InstanceID: "i5", SubmittedAt: t0.Add(-time.Second)},
	}
	for _, j := range jobs {
		if err := b.PutJob(j); err != nil {
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

	got, err := b.Jobs("r-1")
	if err != nil {
		t.Fatalf("Jobs: got error %v, want nil", err)
	}
	if want := []string{"j2", "j3", "j1"}; !reflect.DeepEqual(ids(got), want) {
		t.Errorf("Jobs(r-1): got %v, want %v (r-10 is another request)", ids(got), want)
	}
	active, err := b.ActiveJobs()
	if err != nil {
		t.Fatalf("ActiveJobs: got error %v, want nil", err)
	}
	if want := []string{"j5", "j3", "j1"}; !reflect.DeepEqual(ids(active), want) {
		t.Errorf("ActiveJobs: got %v, want %v", ids(active), want)
	}

	j, err := b.Job("j1")
	if err != nil || !reflect.DeepEqual(j, jobs[1]) {
		t.Errorf("Job(j1): got %+v, %v; want %+v, nil", j, err, jobs[1])
	}
	if _, err := b.Job("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Job(nope): got error %v, want ErrNotFound", err)
	}

	// Moving a job to another request moves it in the index too.
	moved := jobs[1]
	moved.RequestID = "r-2"
	if err := b.PutJob(moved); err != nil {
		t.Fatalf("PutJob: got error %v, want nil", err)
	}
	if got, _ := b.Jobs("r-1"); !reflect.DeepEqual(ids(got), []string{"j2", "j3"}) {
		t.Errorf("Jobs(r-1) after the move: got %v, want [j2 j3]", ids(got))
	}
	if got, _ := b.Jobs("r-2"); !reflect.DeepEqual(ids(got), []string{"j5", "j1"}) {
		t.Errorf("Jobs(r-2) after the move: got %v, want [j5 j1]", ids(got))
	}
	if got, err := b.Jobs("none"); err != nil || len(got) != 0 {
		t.Errorf("Jobs(none): got %v, %v; want none", got, err)
	}
	if err := b.PutJob(Job{}); err == nil {
		t.Errorf("PutJob without ID: got nil error, want one")
	}
}

func TestUpdateJobConcurrent(t *testing.T) {
	t.Parallel()
	b, _ := setup(t)
	if err := b.PutJob(Job{ID: "j1", RequestID: "r-1", Status: "Running"}); err != nil {
		t.Fatalf("PutJob: got error %v, want nil", err)
	}

	// Read-modify-write is atomic: no increment is lost.
	const n = 50
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if _, err := b.UpdateJob("j1", func(j *Job) error { j.PollErrors++; return nil }); err != nil {
				t.Errorf("UpdateJob: got error %v, want nil", err)
			}
		})
	}
	wg.Wait()
	if j, _ := b.Job("j1"); j.PollErrors != n {
		t.Fatalf("got PollErrors %d, want %d", j.PollErrors, n)
	}

	// A sentinel from mutate tells the losers someone else reported the job.
	errAlready := errors.New("already reported")
	var winners atomic.Int32
	for range n {
		wg.Go(func() {
			_, err := b.UpdateJob("j1", func(j *Job) error {
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
	if _, err := b.UpdateJob("nope", func(*Job) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Errorf("UpdateJob(nope): got error %v, want ErrNotFound", err)
	}
	if _, err := b.UpdateJob("j1", func(j *Job) error { j.ID = "j2"; return nil }); err == nil {
		t.Errorf("UpdateJob changing the ID: got nil error, want one")
	}
}

func TestReopenKeepsData(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "state.db")
	b, err := Open(path)
	if err != nil {
		t.Fatalf("Open: got error %v, want nil", err)
	}
	mustCreate(t, b, Request{ID: "r-1", State: Planned})
	if _, err := b.Transition("r-1", []State{Planned}, Submitting, "U1", nil); err != nil {
		t.Fatalf("Transition: got error %v, want nil", err)
	}
	if err := b.PutJob(Job{ID: "j1", RequestID: "r-1"}); err != nil {
		t.Fatalf("PutJob: got error %v, want nil", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: got error %v, want nil", err)
	}
	if err := b.Ping(); err == nil {
		t.Errorf("Ping after Close: got nil error, want one")
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("got file mode %v, want 0600", fi.Mode().Perm())
	}

	b, err = Open(path)
	if err != nil {
		t.Fatalf("reopen: got error %v, want nil", err)
	}
	defer b.Close()
	if b.Path() != path {
		t.Errorf("Path: got %q, want %q", b.Path(), path)
	}
	if err := b.Ping(); err != nil {
		t.Errorf("Ping: got error %v, want nil", err)
	}
	r, err := b.Get("r-1")
	if err != nil || r.State != Submitting || len(r.History) != 1 {
		t.Errorf("after reopen: got %+v, %v; want state submitting with one event", r, err)
	}
	if js, err := b.Jobs("r-1"); err != nil || len(js) != 1 {
		t.Errorf("after reopen: got jobs %v, %v; want one", js, err)
	}
}

// writeStore creates a store at path holding enough data to span many pages.
func writeStore(t *testing.T, path string) {
	t.Helper()
	b, err := Open(path)
	if err != nil {
		t.Fatalf("Open: got error %v, want nil", err)
	}
	plan := json.RawMessage(`"` + strings.Repeat("x", 2000) + `"`)
	for i := range 300 {
		mustCreate(t, b, Request{ID: fmt.Sprintf("r-%03d", i), State: Planned, Plan: plan})
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: got error %v, want nil", err)
	}
}

// assertOpenFailsUntouched opens path, expects an error containing want, and
// checks that the file still has exactly the bytes it had.
func assertOpenFailsUntouched(t *testing.T, path, want string) {
	t.Helper()
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(path)
	if err == nil {
		_ = b.Close()
		t.Fatalf("Open: got nil error, want one")
	}
	t.Logf("Open: %v", err)
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), path) {
		t.Errorf("Open: got error %q, want it to contain %q and the path", err, want)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Errorf("Open changed the file: got %d bytes, want the original %d", len(after), len(before))
	}
}

func TestOpenTruncatedFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "state.db")
	writeStore(t, path)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	assertOpenFailsUntouched(t, path, "truncated")
}

func TestOpenDamagedFile(t *testing.T) {
	t.Parallel()
	valid := filepath.Join(t.TempDir(), "valid.db")
	writeStore(t, valid)
	data, err := os.ReadFile(valid)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	garbage := make([]byte, 64<<10)
	for i := range garbage {
		garbage[i] = byte(rng.Uint32())
	}
	const page = 4096
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{name: "garbage", data: garbage, want: "damaged"},
		{name: "short text", data: []byte("hello, world\n"), want: "damaged"},
		{name: "one page", data: data[:page], want: "damaged"},
		{name: "both meta pages zeroed", data: zeroed(data, 0, 2*page), want: "damaged"},
		{name: "data pages zeroed", data: zeroed(data, 2*page, 6*page), want: "damaged"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "state.db")
			if err := os.WriteFile(path, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			assertOpenFailsUntouched(t, path, tc.want)
		})
	}
}

// zeroed returns a copy of data with bytes [from, to) set to zero.
func zeroed(data []byte, from, to int) []byte {
	out := bytes.Clone(data)
	clear(out[from:to])
	return out
}

func TestOpenForeignBoltFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "other.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket([]byte("widgets"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	assertOpenFailsUntouched(t, path, "not a geminidb-patch-bot store")
}

func TestOpenEmptyFileInitialises(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "state.db")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := Open(path)
	if err != nil {
		t.Fatalf("Open of an empty file: got error %v, want nil", err)
	}
	defer b.Close()
	if err := b.Ping(); err != nil {
		t.Errorf("Ping: got error %v, want nil", err)
	}
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("Open(directory): got error %v, want one saying it is not a regular file", err)
	}
	if _, err := Open(filepath.Join(dir, "missing", "state.db")); err == nil {
		t.Errorf("Open in a missing directory: got nil error, want one")
	}
}

func TestOpenLockedFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "state.db")
	first, err := Open(path)
	if err != nil {
		t.Fatalf("Open: got error %v, want nil", err)
	}
	defer first.Close()
	mustCreate(t, first, Request{ID: "r-1", State: Planned})

	start := time.Now()
	second, err := Open(path)
	elapsed := time.Since(start)
	if err == nil {
		_ = second.Close()
		t.Fatalf("second Open: got nil error, want one")
	}
	if !strings.Contains(err.Error(), "in use") || !errors.Is(err, berrors.ErrTimeout) {
		t.Errorf("second Open: got error %q, want one saying the file is in use, wrapping berrors.ErrTimeout", err)
	}
	if elapsed > 3*time.Second {
		t.Errorf("second Open took %v, want about %v", elapsed, DefaultLockTimeout)
	}
	// The first store is unharmed.
	if _, err := first.Get("r-1"); err != nil {
		t.Errorf("Get on the first store: got error %v, want nil", err)
	}
}
