package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// clock is a fake time source that advances one second per reading, so that
// ordering by time is deterministic, until it is frozen; then it moves only
// by Advance.
type clock struct {
	mu     sync.Mutex
	t      time.Time
	frozen bool
}

func newClock() *clock {
	return &clock{t: time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)}
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.frozen {
		c.t = c.t.Add(time.Second)
	}
	return c.t
}

// Freeze stops the clock advancing by itself.
func (c *clock) Freeze() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.frozen = true
}

// Advance moves the clock d forward.
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// setup opens a store in a new temporary directory, closed at cleanup.
func setup(t *testing.T) (*Bolt, *clock) {
	t.Helper()
	c := newClock()
	return setupWith(t, c.Now), c
}

// setupWith opens a store with clock now in a new temporary directory,
// closed at cleanup.
func setupWith(t *testing.T, now func() time.Time) *Bolt {
	t.Helper()
	b, err := OpenWith(filepath.Join(t.TempDir(), "test.db"), Options{Now: now})
	if err != nil {
		t.Fatalf("OpenWith: got error %v, want nil", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func mustCreate(t *testing.T, b backend, r Request) {
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

// TestOpenFileWithoutNewBuckets opens a store written before Allow and
// Remember existed: it has none of their buckets, which Open then creates.
// Their state survives a reopen.
func TestOpenFileWithoutNewBuckets(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, name := range []string{"meta", "requests", "jobs", "jobs_by_request"} {
			if _, err := tx.CreateBucket([]byte(name)); err != nil {
				return err
			}
		}
		if err := tx.Bucket([]byte("meta")).Put([]byte("schema"), []byte("1")); err != nil {
			return err
		}
		return tx.Bucket([]byte("requests")).Put([]byte("r-1"), []byte(`{"id":"r-1","state":"planned"}`))
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	b, err := Open(path)
	if err != nil {
		t.Fatalf("Open of a file without the limits, seen and expiries buckets: got error %v, want nil", err)
	}
	if r, err := b.Get("r-1"); err != nil || r.State != Planned {
		t.Errorf("Get(r-1): got %+v, %v; want the old request", r, err)
	}
	if !mustAllow(t, b, "u1", 1, time.Hour) || mustAllow(t, b, "u1", 1, time.Hour) {
		t.Errorf("Allow(u1, 1, 1h) twice: want true, then false")
	}
	if !mustRemember(t, b, "k", time.Hour) {
		t.Errorf("Remember(k): got false, want true")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	b, err = Open(path)
	if err != nil {
		t.Fatalf("reopen: got error %v, want nil", err)
	}
	defer b.Close()
	if mustAllow(t, b, "u1", 1, time.Hour) {
		t.Errorf("Allow(u1) after reopen: got true, want false (the window is stored)")
	}
	if mustRemember(t, b, "k", time.Hour) {
		t.Errorf("Remember(k) after reopen: got true, want false (the key is stored)")
	}
}

// bucketLen counts the records of a bucket.
func bucketLen(t *testing.T, b *Bolt, name []byte) int {
	t.Helper()
	n := 0
	if err := b.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(name).Stats().KeyN
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestBoltPrunesExpired checks that expired Allow and Remember records are
// deleted, at most pruneBatch per call, and that the expiry index keeps one
// entry per record.
func TestBoltPrunesExpired(t *testing.T) {
	t.Parallel()
	b, c := setup(t)
	c.Freeze()
	const n = 150
	for i := range n {
		mustRemember(t, b, fmt.Sprintf("seen-%d", i), time.Minute)
		mustAllow(t, b, fmt.Sprintf("user-%d", i), 5, 2*time.Minute)
	}
	mustRemember(t, b, "long", time.Hour)
	mustAllow(t, b, "user-0", 5, 2*time.Minute) // a second hit changes no expiry
	check := func(what string, seen, limits int) {
		t.Helper()
		gotSeen, gotLimits, gotIndex := bucketLen(t, b, bucketSeen), bucketLen(t, b, bucketLimits), bucketLen(t, b, bucketExpiries)
		if gotSeen != seen || gotLimits != limits || gotIndex != seen+limits {
			t.Errorf("%s: got %d seen, %d limits, %d index entries; want %d, %d, %d", what, gotSeen, gotLimits, gotIndex, seen, limits, seen+limits)
		}
	}
	check("before expiry", n+1, n)

	c.Advance(time.Minute) // the seen-* keys expire; the limits do not yet
	mustRemember(t, b, "long", time.Hour)
	check("one call after the seen keys expired", n+1-pruneBatch, n)
	for range 3 {
		mustRemember(t, b, "long", time.Hour)
	}
	check("after enough calls", 1, n)

	c.Advance(time.Minute) // now the limits have expired too
	for range 3 {
		mustAllow(t, b, "user-1", 5, 2*time.Minute) // pruned, then a new window
	}
	check("after the windows ended", 1, 1)
	if !mustRemember(t, b, "seen-7", time.Minute) {
		t.Errorf("Remember(seen-7) after it was pruned: got false, want true")
	}
}
