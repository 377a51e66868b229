package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// committer runs write transactions on a bbolt database so that writes
// arriving while a commit is in progress share the next commit (group
// commit): a write that finds no commit in progress runs at once, alone;
// the writes that queue up meanwhile then run together in one transaction,
// one commit and one fsync, led by the first of them.
//
// It does what bbolt's DB.Batch does, without Batch's timer: Batch waits up
// to MaxBatchDelay (10 ms) for a batch to fill, which on a disk that syncs
// in well under a millisecond made concurrent writes several times slower
// than committing each alone. Here a group is as large as what arrived
// during the previous commit, so it adapts to the speed of the disk.
//
// As with Batch, a function that returns an error (or panics) is taken out
// of its group, the group is run again without it, and it is then run
// again alone, by its caller; so a function may run more than once, and
// must change nothing outside its transaction but variables it reports
// through.
type committer struct {
	db *bolt.DB
	// syncDelay is how long after a commit without fsync (a group of lazy
	// writes only) the file is synced at the latest; 0 means
	// defaultSyncDelay.
	syncDelay time.Duration
	syncMu    sync.Mutex
	syncTimer *time.Timer  // set while a sync is pending
	unsynced  atomic.Int64 // commits made without fsync

	mu      sync.Mutex
	busy    bool          // a leader is running a group
	waiting []*commitCall // the next group, in order of arrival
	done    atomic.Int64  // write transactions committed (or rolled back)
}

// defaultSyncDelay bounds how long a lazy write stays unsynced when no
// synced commit comes first.
const defaultSyncDelay = 100 * time.Millisecond

// commitCall is one write waiting for its group.
type commitCall struct {
	fn   func(*bolt.Tx) error
	lazy bool       // may commit without fsync (see Bolt.Create)
	done chan error // gets the result, errLead or errAlone; buffered
}

// Signals on commitCall.done other than the write's result.
var (
	errLead  = errors.New("lead the next group")
	errAlone = errors.New("run alone")
)

// update runs fn in a write transaction, possibly shared with others.
// While the write waits for its group, ctx ending takes it out of the
// queue and update returns ctx's error with fn never run; once its group
// is running, update waits for the commit (fn may have written).
//
// A lazy write may be committed without waiting for fsync, when every
// write of its group is lazy; the file is then synced by the next synced
// commit or syncDelay later, whichever comes first.
func (c *committer) update(ctx context.Context, fn func(*bolt.Tx) error, lazy bool) error {
	call := &commitCall{fn: fn, lazy: lazy, done: make(chan error, 1)}
	c.mu.Lock()
	if c.busy {
		c.waiting = append(c.waiting, call)
		c.mu.Unlock()
	} else {
		c.busy = true
		c.mu.Unlock()
		c.lead([]*commitCall{call})
	}
	for {
		var err error
		select {
		case err = <-call.done:
		case <-ctx.Done():
			if c.withdraw(call) {
				return ctx.Err()
			}
			err = <-call.done // its group is running: wait for the commit
		}
		switch err {
		case errLead:
			c.mu.Lock()
			group := c.waiting
			c.waiting = nil
			c.mu.Unlock()
			c.lead(group)
		case errAlone:
			if err := ctx.Err(); err != nil {
				return err
			}
			c.done.Add(1)
			return syncedUpdate(c.db, fn)
		default:
			return err
		}
	}
}

// withdraw takes call out of the queue of the next group and reports
// whether it was still there; if not, a leader has taken it into a group
// (or it was told to run alone), and its result will come. A call told to
// lead the next group hands the lead on to the next in the queue, or ends
// the busy spell.
func (c *committer) withdraw(call *commitCall) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := slices.Index(c.waiting, call)
	if i < 0 {
		return false
	}
	c.waiting = slices.Delete(c.waiting, i, i+1)
	select {
	case <-call.done: // errLead: only a queued call's signal
		if len(c.waiting) == 0 {
			c.busy = false
		} else {
			c.waiting[0].done <- errLead
		}
	default:
	}
	return true
}

// lead runs group, then hands the lead to the first write that queued
// meanwhile, or ends the busy spell.
func (c *committer) lead(group []*commitCall) {
	c.run(group)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.waiting) == 0 {
		c.busy = false
		return
	}
	c.waiting[0].done <- errLead
}

// run runs the functions of group in one write transaction and tells each
// its result. A function that fails is told to run alone, and the rest run
// again without it.
func (c *committer) run(group []*commitCall) {
	for len(group) > 0 {
		failed := -1
		c.done.Add(1)
		lazy := !slices.ContainsFunc(group, func(call *commitCall) bool { return !call.lazy })
		err := c.db.Update(func(tx *bolt.Tx) error {
			// Read by this transaction's commit, under the write lock
			// every write transaction holds: so each sets it.
			tx.DB().NoSync = lazy
			for i, call := range group {
				if err := callSafely(call.fn, tx); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if failed >= 0 {
			group[failed].done <- errAlone
			group = slices.Delete(group, failed, failed+1)
			continue
		}
		if lazy && err == nil {
			c.unsynced.Add(1)
			c.syncLater()
		}
		for _, call := range group {
			call.done <- err
		}
		return
	}
}

// callSafely calls fn, turning a panic into an error, so that a panicking
// write cannot take down the leader running it for another goroutine; run
// alone, it panics in its own.
func callSafely(fn func(*bolt.Tx) error, tx *bolt.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return fn(tx)
}

// syncedUpdate runs fn in a write transaction of db whose commit is synced
// (see committer.run for why it must say so). Every write transaction on
// a store's db goes through it or through a committer.
func syncedUpdate(db *bolt.DB, fn func(*bolt.Tx) error) error {
	return db.Update(func(tx *bolt.Tx) error {
		tx.DB().NoSync = false
		return fn(tx)
	})
}

// syncLater makes sure the file is synced within syncDelay.
func (c *committer) syncLater() {
	c.syncMu.Lock()
	defer c.syncMu.Unlock()
	if c.syncTimer != nil {
		return
	}
	d := c.syncDelay
	if d <= 0 {
		d = defaultSyncDelay
	}
	c.syncTimer = time.AfterFunc(d, func() { _ = c.flush() })
}

// flush syncs the file now if a sync is pending. A synced commit meanwhile
// made it unnecessary, but the pending sync is cheap and harmless.
func (c *committer) flush() error {
	c.syncMu.Lock()
	defer c.syncMu.Unlock()
	if c.syncTimer == nil {
		return nil
	}
	c.syncTimer.Stop()
	c.syncTimer = nil
	if err := c.db.Sync(); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	return nil
}
