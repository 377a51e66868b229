package store

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

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
	return &committer{db: db}
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
			err := c.update(func(tx *bolt.Tx) error {
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
			})
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
