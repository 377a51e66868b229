package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// openCommitter returns a committer on a new bbolt file with one bucket,
// "b".
func openCommitter(t *testing.T) *committer {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "c.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket([]byte("b"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	c := &committer{db: db}
	// Runs before the db.Close above (cleanups run last first): a sync
	// still pending on its timer must not meet a closed file.
	t.Cleanup(func() { _ = c.flush() })
	return c
}

// TestCommitterFailuresStayTheirOwn runs many writes at once, some of which
// fail after writing and some of which panic: each failing write gets its
// own error or panic and leaves nothing behind, every other write is
// committed, and writes share commits.
func TestCommitterFailuresStayTheirOwn(t *testing.T) {
	t.Parallel()
	c := openCommitter(t)
	errBoom := errors.New("boom")
	const n = 300
	var runs atomic.Int32
	txOf := make([]int, n) // the transaction of each write's last run
	var wg sync.WaitGroup
	start := make(chan struct{})
	results := make([]any, n)
	for i := range n {
		wg.Go(func() {
			<-start
			defer func() {
				if p := recover(); p != nil {
					results[i] = p
				}
			}()
			key := fmt.Appendf(nil, "k%03d", i)
			err := c.update(t.Context(), func(tx *bolt.Tx) error {
				runs.Add(1)
				txOf[i] = tx.ID()
				if err := tx.Bucket([]byte("b")).Put(key, []byte("v")); err != nil {
					return err
				}
				switch {
				case i%50 == 7:
					panic(fmt.Sprintf("panic %d", i))
				case i%10 == 3:
					return errBoom
				}
				return nil
			}, i%2 == 0)
			results[i] = err
		})
	}
	close(start)
	wg.Wait()

	for i, res := range results {
		var want any
		switch {
		case i%50 == 7:
			want = fmt.Sprintf("panic %d", i)
		case i%10 == 3:
			want = errBoom
		}
		if res != want {
			t.Errorf("write %d: got %v, want %v", i, res, want)
		}
	}
	if err := c.db.View(func(tx *bolt.Tx) error {
		for i := range n {
			got := tx.Bucket([]byte("b")).Get(fmt.Appendf(nil, "k%03d", i)) != nil
			if want := i%50 != 7 && i%10 != 3; got != want {
				t.Errorf("key of write %d: stored %v, want %v", i, got, want)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	commits := map[int]bool{}
	for i, tx := range txOf {
		if i%50 != 7 && i%10 != 3 {
			commits[tx] = true
		}
	}
	t.Logf("%d writes, %d runs of their functions, the committed ones in %d transactions", n, runs.Load(), len(commits))
	if len(commits) >= n*6/10 {
		t.Errorf("got %d transactions for %d committed writes started at once, want them to share", len(commits), n*6/10)
	}
	if c.busy || len(c.waiting) != 0 {
		t.Errorf("after all writes: got busy %v with %d waiting, want idle", c.busy, len(c.waiting))
	}
}

// waitFor waits, up to a few seconds, until cond holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}

// TestCommitterCancelWhileQueued cancels a write that waits for its group
// behind a commit in progress: it returns at once with the context's
// error and is never run, while the write queued behind it still commits.
func TestCommitterCancelWhileQueued(t *testing.T) {
	c := openCommitter(t)
	put := func(key string, ran *atomic.Bool) func(*bolt.Tx) error {
		return func(tx *bolt.Tx) error {
			if ran != nil {
				ran.Store(true)
			}
			return tx.Bucket([]byte("b")).Put([]byte(key), []byte("v"))
		}
	}
	queued := func() int {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.waiting)
	}
	entered, release := make(chan struct{}), make(chan struct{})
	leader := make(chan error, 1)
	go func() {
		leader <- c.update(t.Context(), func(tx *bolt.Tx) error {
			close(entered)
			<-release
			return put("lead", nil)(tx)
		}, false)
	}()
	<-entered
	ctx, cancel := context.WithCancel(t.Context())
	var ranCancelled atomic.Bool
	cancelled := make(chan error, 1)
	go func() { cancelled <- c.update(ctx, put("cancelled", &ranCancelled), false) }()
	waitFor(t, "the write to cancel is queued", func() bool { return queued() == 1 })
	behind := make(chan error, 1)
	go func() { behind <- c.update(t.Context(), put("behind", nil), false) }()
	waitFor(t, "the write behind it is queued", func() bool { return queued() == 2 })

	cancel()
	select {
	case err := <-cancelled:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled write: got error %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancelled write: still waiting 5s after its context ended")
	}
	if n := queued(); n != 1 {
		t.Errorf("after the cancel: got %d writes queued, want 1 (the one behind)", n)
	}
	close(release)
	for name, ch := range map[string]chan error{"leader": leader, "behind": behind} {
		if err := <-ch; err != nil {
			t.Errorf("%s: got error %v, want nil", name, err)
		}
	}
	if ranCancelled.Load() {
		t.Error("the cancelled write ran, want it never run")
	}
	if err := c.db.View(func(tx *bolt.Tx) error {
		for key, want := range map[string]bool{"lead": true, "behind": true, "cancelled": false} {
			if got := tx.Bucket([]byte("b")).Get([]byte(key)) != nil; got != want {
				t.Errorf("key %s: stored %v, want %v", key, got, want)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if c.busy || len(c.waiting) != 0 {
		t.Errorf("after all writes: got busy %v with %d waiting, want idle", c.busy, len(c.waiting))
	}
}

// TestCommitterWithdrawHandsOnTheLead withdraws a queued write that was
// just told to lead the next group: the lead passes to the next write in
// the queue, or, with none, the committer goes idle, so no write is left
// waiting for a leader that is gone.
func TestCommitterWithdrawHandsOnTheLead(t *testing.T) {
	c := openCommitter(t)
	call := func() *commitCall { return &commitCall{done: make(chan error, 1)} }
	a, b := call(), call()
	c.busy, c.waiting = true, []*commitCall{a, b}
	a.done <- errLead
	if !c.withdraw(a) {
		t.Fatal("withdraw(a): got false, want true (it was queued)")
	}
	select {
	case err := <-b.done:
		if err != errLead {
			t.Errorf("b: got %v, want errLead", err)
		}
	default:
		t.Error("b: got no signal, want errLead")
	}
	if !c.busy || len(c.waiting) != 1 || c.waiting[0] != b {
		t.Errorf("after withdrawing a: got busy %v with %d waiting, want busy with b waiting", c.busy, len(c.waiting))
	}
	b.done <- errLead
	if !c.withdraw(b) {
		t.Fatal("withdraw(b): got false, want true")
	}
	if c.busy || len(c.waiting) != 0 {
		t.Errorf("after withdrawing the last: got busy %v with %d waiting, want idle", c.busy, len(c.waiting))
	}
	if c.withdraw(a) {
		t.Error("withdraw(a) again: got true, want false (no longer queued)")
	}
}
