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
