package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
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
	if err := b.Create(t.Context(), r); err != nil {
		t.Fatalf("Create(%s): got error %v, want nil", r.ID, err)
	}
}

func TestStateFinal(t *testing.T) {
	t.Parallel()
	final := map[State]bool{Done: true, Cancelled: true, Rejected: true, Expired: true, Stopped: true}
	for _, s := range []State{Planned, AwaitingApproval, Approved, Submitting, Submitted, Paused, Done, Cancelled, Rejected, Expired, Stopped} {
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
	if _, err := b.Transition(t.Context(), "r-1", []State{Planned}, Submitting, "U1", nil); err != nil {
		t.Fatalf("Transition: got error %v, want nil", err)
	}
	if err := b.PutJob(t.Context(), Job{ID: "j1", RequestID: "r-1"}); err != nil {
		t.Fatalf("PutJob: got error %v, want nil", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: got error %v, want nil", err)
	}
	if err := b.Ping(t.Context()); err == nil {
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
	if err := b.Ping(t.Context()); err != nil {
		t.Errorf("Ping: got error %v, want nil", err)
	}
	r, err := b.Get(t.Context(), "r-1")
	if err != nil || r.State != Submitting || len(r.History) != 1 {
		t.Errorf("after reopen: got %+v, %v; want state submitting with one event", r, err)
	}
	if js, err := b.Jobs(t.Context(), "r-1"); err != nil || len(js) != 1 {
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
	if err := b.Ping(t.Context()); err != nil {
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
	if _, err := first.Get(t.Context(), "r-1"); err != nil {
		t.Errorf("Get on the first store: got error %v, want nil", err)
	}
}

// writeSchema1 writes, with bbolt directly, a store as the version before
// the indexes wrote it: no state or active index, Allow and Remember in
// buckets of their own.
func writeSchema1(t *testing.T, path string, requests []Request, jobs []Job) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range []string{"meta", "requests", "jobs", "jobs_by_request", "limits", "seen", "expiries"} {
			if _, err := tx.CreateBucket([]byte(name)); err != nil {
				return err
			}
		}
		if err := tx.Bucket([]byte("meta")).Put([]byte("schema"), []byte("1")); err != nil {
			return err
		}
		if err := tx.Bucket([]byte("seen")).Put([]byte("cmd-1"), []byte(`{"expires_at":"2026-11-28T09:00:00Z"}`)); err != nil {
			return err
		}
		for _, r := range requests {
			data, _ := json.Marshal(r)
			if err := tx.Bucket([]byte("requests")).Put([]byte(r.ID), data); err != nil {
				return err
			}
		}
		for _, j := range jobs {
			data, _ := json.Marshal(j)
			if err := tx.Bucket([]byte("jobs")).Put([]byte(j.ID), data); err != nil {
				return err
			}
			if err := tx.Bucket([]byte("jobs_by_request")).Put([]byte(j.RequestID+"\x00"+j.ID), nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// ids returns the IDs of requests or jobs, in order.
func ids[T Request | Job](xs []T) []string {
	var out []string
	for _, x := range xs {
		switch v := any(x).(type) {
		case Request:
			out = append(out, v.ID)
		case Job:
			out = append(out, v.ID)
		}
	}
	return out
}

// assertIndexed checks that b lists the planned requests want and the
// active jobs wantJobs, decoding only those.
func assertIndexed(t *testing.T, b *Bolt, want, wantJobs []string) {
	t.Helper()
	before := b.Decoded()
	rs, err := b.List(t.Context(), Planned)
	if err != nil || !slices.Equal(ids(rs), want) {
		t.Errorf("List(planned): got %v, %v; want %v", ids(rs), err, want)
	}
	js, err := b.ActiveJobs(t.Context())
	if err != nil || !slices.Equal(ids(js), wantJobs) {
		t.Errorf("ActiveJobs: got %v, %v; want %v", ids(js), err, wantJobs)
	}
	if got, wantN := b.Decoded()-before, int64(len(want)+len(wantJobs)); got != wantN {
		t.Errorf("List and ActiveJobs decoded %d records, want %d", got, wantN)
	}
}

// TestOpenSchema1File opens a store written before the indexes existed:
// Open builds them from the records, deletes the buckets of Allow and
// Remember, and marks the file as schema 2.
func TestOpenSchema1File(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "old.db")
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var requests []Request
	var jobs []Job
	for i := range 50 {
		id := fmt.Sprintf("r-%02d", i)
		requests = append(requests, Request{ID: id, State: Done, CreatedAt: t0, UpdatedAt: t0})
		jobs = append(jobs, Job{ID: "j-" + id, RequestID: id, Reported: true})
	}
	requests = append(requests,
		Request{ID: "p-2", State: Planned, CreatedAt: t0.Add(2 * time.Second)},
		Request{ID: "p-1", State: Planned, CreatedAt: t0.Add(time.Second)},
		Request{ID: "s-1", State: Submitted, CreatedAt: t0})
	jobs = append(jobs, Job{ID: "j-s-1", RequestID: "s-1"})
	writeSchema1(t, path, requests, jobs)

	b, err := Open(path)
	if err != nil {
		t.Fatalf("Open of a schema 1 file: got error %v, want nil", err)
	}
	assertIndexed(t, b, []string{"p-1", "p-2"}, []string{"j-s-1"})
	if js, err := b.Jobs(t.Context(), "s-1"); err != nil || !slices.Equal(ids(js), []string{"j-s-1"}) {
		t.Errorf("Jobs(s-1): got %v, %v; want [j-s-1]", ids(js), err)
	}
	if err := b.db.View(func(tx *bolt.Tx) error {
		for _, name := range legacyBuckets {
			if tx.Bucket(name) != nil {
				t.Errorf("bucket %s: still there, want it deleted", name)
			}
		}
		if v := string(tx.Bucket(bucketMeta).Get(keySchema)); v != schemaVersion {
			t.Errorf("schema: got %q, want %q", v, schemaVersion)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if stale, err := verify(path, fi.Size(), time.Second); err != nil || stale {
		t.Errorf("verify after the migration: got stale %v, error %v; want false, nil", stale, err)
	}
}

// TestOpenRebuildsStaleIndexes opens a file whose records an older version
// changed after the indexes were built (it knows nothing of them): the
// indexes are rebuilt to match.
func TestOpenRebuildsStaleIndexes(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "state.db")
	b, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, b, Request{ID: "p-1", State: Planned})
	mustCreate(t, b, Request{ID: "p-2", State: Planned})
	if err := b.PutJob(t.Context(), Job{ID: "j1", RequestID: "p-1"}); err != nil {
		t.Fatal(err)
	}
	assertIndexed(t, b, []string{"p-1", "p-2"}, []string{"j1"})
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	// What an older version's Transition, Create and UpdateJob write.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	put := func(tx *bolt.Tx, bucket, key string, v any) {
		data, _ := json.Marshal(v)
		if err := tx.Bucket([]byte(bucket)).Put([]byte(key), data); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		put(tx, "requests", "p-2", Request{ID: "p-2", State: Cancelled})
		put(tx, "requests", "p-3", Request{ID: "p-3", State: Planned, CreatedAt: time.Now()})
		put(tx, "jobs", "j1", Job{ID: "j1", RequestID: "p-1", Reported: true})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	b, err = Open(path)
	if err != nil {
		t.Fatalf("reopen: got error %v, want nil", err)
	}
	defer b.Close()
	assertIndexed(t, b, []string{"p-1", "p-3"}, nil)
}

func TestOpenNewerSchema(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "state.db")
	writeStore(t, path)
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keySchema, []byte("4"))
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	assertOpenFailsUntouched(t, path, "newer version")
}

// TestBoltLimitsInMemory checks that Allow and Remember keep their state
// in memory: expired keys are dropped, the number of keys is bounded, and
// a reopened store starts afresh.
func TestBoltLimitsInMemory(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "state.db")
	c := newClock()
	c.Freeze()
	b, err := OpenWith(path, Options{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	const n = 150
	for i := range n {
		mustRemember(t, b, fmt.Sprintf("seen-%d", i), time.Minute)
		mustAllow(t, b, fmt.Sprintf("user-%d", i), 5, 2*time.Minute)
	}
	mustRemember(t, b, "long", time.Hour)
	if got := b.seen.len(); got != n+1 {
		t.Errorf("before expiry: got %d remembered keys, want %d", got, n+1)
	}
	c.Advance(time.Minute)
	mustRemember(t, b, "long", time.Hour)
	if got, gotLimits := b.seen.len(), b.limits.len(); got != 1 || gotLimits != n {
		t.Errorf("after the seen keys expired: got %d remembered keys and %d windows, want 1 and %d", got, gotLimits, n)
	}
	c.Advance(time.Minute)
	mustAllow(t, b, "user-1", 5, 2*time.Minute)
	if got := b.limits.len(); got != 1 {
		t.Errorf("after the windows ended: got %d windows, want 1", got)
	}

	// Full: a new key pushes out the one that expires soonest.
	b.seen = newMemo[seenRecord](3)
	for i, ttl := range []time.Duration{3 * time.Minute, time.Minute, 2 * time.Minute, 4 * time.Minute} {
		mustRemember(t, b, fmt.Sprintf("k%d", i), ttl)
	}
	if got := b.seen.len(); got != 3 {
		t.Errorf("full memo: got %d keys, want 3", got)
	}
	for key, want := range map[string]bool{"k0": true, "k1": false, "k2": true, "k3": true} {
		if _, got := b.seen.entries[key]; got != want {
			t.Errorf("full memo: got %s kept %v, want %v (k1 expires soonest)", key, got, want)
		}
	}

	if !mustAllow(t, b, "u", 1, time.Hour) || mustAllow(t, b, "u", 1, time.Hour) {
		t.Errorf("Allow(u, 1, 1h) twice: want true, then false")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b, err = OpenWith(path, Options{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if !mustAllow(t, b, "u", 1, time.Hour) {
		t.Errorf("Allow(u) after reopen: got false, want true (windows are not kept in the file)")
	}
}

func TestCompactBolt(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "state.db"), filepath.Join(dir, "compact.db")
	c := newClock()
	b, err := OpenWith(src, Options{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	plan := json.RawMessage(`"` + strings.Repeat("x", 2000) + `"`)
	parallel(t, 2000, func(i int) error {
		id := fmt.Sprintf("old-%04d", i)
		if err := b.Create(t.Context(), Request{ID: id, State: Done, Plan: plan}); err != nil {
			return err
		}
		return b.PutJob(t.Context(), Job{ID: "j-" + id, RequestID: id, Reported: true})
	})
	mustCreate(t, b, Request{ID: "p-1", State: Planned, Plan: plan})
	if err := b.PutJob(t.Context(), Job{ID: "j1", RequestID: "p-1"}); err != nil {
		t.Fatal(err)
	}
	for mustPrune(t, b, c.Now().Add(time.Hour), 500) > 0 {
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}

	if err := CompactBolt(src, dst); err != nil {
		t.Fatalf("CompactBolt: got error %v, want nil", err)
	}
	after, err := os.ReadFile(src)
	if err != nil || !bytes.Equal(before, after) {
		t.Errorf("CompactBolt changed the source file")
	}
	fi, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d bytes compacted to %d", len(before), fi.Size())
	if fi.Size() > int64(len(before))/4 || fi.Mode().Perm() != 0o600 {
		t.Errorf("compacted file: got %d bytes, mode %v; want at most a quarter of %d, mode 0600", fi.Size(), fi.Mode().Perm(), len(before))
	}
	b, err = Open(dst)
	if err != nil {
		t.Fatalf("Open of the compacted file: got error %v, want nil", err)
	}
	assertIndexed(t, b, []string{"p-1"}, []string{"j1"})
	if got := len(mustList(t, b)); got != 1 {
		t.Errorf("List() of the compacted file: got %d requests, want 1", got)
	}

	// Refused: an existing destination, a source in use, a damaged one.
	if err := CompactBolt(src, dst); err == nil {
		t.Errorf("CompactBolt onto an existing file: got nil error, want one")
	}
	held := filepath.Join(dir, "held.db")
	if err := CompactBolt(dst, held); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("CompactBolt of a file in use: got error %v, want one saying it is in use", err)
	}
	_ = b.Close()
	damagedSrc := filepath.Join(dir, "damaged.db")
	if err := os.WriteFile(damagedSrc, before[:len(before)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CompactBolt(damagedSrc, held); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("CompactBolt of a damaged file: got error %v, want one saying it is damaged", err)
	}
	if _, err := os.Stat(held); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after failed compactions: %s exists (%v), want no file left behind", held, err)
	}
}
