package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// update runs fn in a write transaction, which writes arriving at the
// same time may share (see committer); so fn may run more than once, and
// must read what it needs inside the transaction and change nothing
// outside it but the variables it reports through, which it sets afresh
// on every run.
//
// An fn that decides to write nothing (the request is in another state, it
// does not exist, a mutate refused) reports that through such a variable
// and returns nil: a group is re-run without any member that returns an
// error, so returning one would cost the others a second run, and since fn
// wrote nothing, committing its empty share is the same as rolling it back.
// fn returns an error only for a failure after it may have written.
//
// A ctx that has ended when update is called, or while the write waits for
// its turn in a group, ends it with ctx's error and nothing written.
func (b *Bolt) update(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	fn = b.checkSchema(fn)
	if b.writeVia != nil {
		return b.writeVia(fn)
	}
	return b.commits.update(ctx, fn, false)
}

// updateLazy is update for a write that may commit without waiting for
// fsync (see Bolt.Create), unless ctx asks for durability (WithDurable).
func (b *Bolt) updateLazy(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	fn = b.checkSchema(fn)
	if b.writeVia != nil {
		return b.writeVia(fn)
	}
	return b.commits.update(ctx, fn, !durable(ctx))
}

// view runs fn in a read transaction, unless ctx has ended.
func (b *Bolt) view(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.db.View(fn)
}

// get decodes the record under key in bk into v, counting it, or returns
// ErrNotFound.
func (b *Bolt) get(bk *bolt.Bucket, key string, v any) error {
	data := bk.Get([]byte(key))
	if data == nil {
		return ErrNotFound
	}
	if err := b.decodes.decode(data, v); err != nil {
		return fmt.Errorf("decode %q: %w", key, err)
	}
	return nil
}

// Create stores a new request. It sets CreatedAt and UpdatedAt to now when
// they are zero, and returns an error wrapping ErrExists if the ID is taken.
func (b *Bolt) Create(ctx context.Context, r Request) error {
	if err := prepareCreate(&r, b.now); err != nil {
		return err
	}
	var exists bool
	write := b.update
	if openPlan(r) {
		write = b.updateLazy
	}
	err := write(ctx, func(tx *bolt.Tx) error {
		exists = tx.Bucket(bucketRequests).Get([]byte(r.ID)) != nil
		if exists {
			return nil
		}
		_, err := putRequest(tx, nil, r)
		return err
	})
	if err == nil && exists {
		err = ErrExists
	}
	if err != nil {
		return fmt.Errorf("create request %s: %w", r.ID, err)
	}
	return nil
}

// putRequest saves r, which was old before (nil for a new request), and
// moves its index entries from what they were to what they are; it returns
// r as stored.
func putRequest(tx *bolt.Tx, old *Request, r Request) (Request, error) {
	data, err := json.Marshal(r)
	if err != nil {
		return Request{}, fmt.Errorf("encode: %w", err)
	}
	if err := tx.Bucket(bucketRequests).Put([]byte(r.ID), data); err != nil {
		return Request{}, fmt.Errorf("save: %w", err)
	}
	if err := reindex(tx, requestIndexes, r.ID, old, &r); err != nil {
		return Request{}, err
	}
	var out Request
	if err := json.Unmarshal(data, &out); err != nil {
		return Request{}, fmt.Errorf("decode: %w", err)
	}
	return out, nil
}

// Get returns the request with the given ID, or an error wrapping
// ErrNotFound.
func (b *Bolt) Get(ctx context.Context, id string) (Request, error) {
	var r Request
	err := b.view(ctx, func(tx *bolt.Tx) error {
		return b.get(tx.Bucket(bucketRequests), id, &r)
	})
	if err != nil {
		return Request{}, fmt.Errorf("get request %s: %w", id, err)
	}
	return r, nil
}

// Transition moves request id from one of the states in from to state to,
// atomically: if the request is in none of them, it returns a *ConflictError
// (errors.Is ErrConflict) and changes nothing. Otherwise it applies mutate
// (which may be nil, and cannot change the ID), sets State, appends an Event
// by user, sets UpdatedAt and saves, all in one write transaction, and
// returns the request as stored. mutate may run more than once (see Bolt).
func (b *Bolt) Transition(ctx context.Context, id string, from []State, to State, user string, mutate func(*Request)) (Request, error) {
	return b.TransitionIf(ctx, id, from, to, user, orNoError(mutate))
}

// TransitionIf is Transition with a mutate that may refuse: when mutate
// returns an error, nothing is written and the error is returned wrapped
// (test for it with errors.Is or errors.As). It lets a caller check, in
// the same transaction as the swap, more than the state: that a wave is
// not yet sent, that a window is open. mutate may run more than once (see
// Bolt).
func (b *Bolt) TransitionIf(ctx context.Context, id string, from []State, to State, user string, mutate func(*Request) error) (Request, error) {
	if err := checkTransition(id, from, to); err != nil {
		return Request{}, err
	}
	var old Request
	out, refused, err := modify(ctx, b, bucketRequests, id, func(r *Request) error {
		old = *r
		return applyTransition(r, id, from, to, user, b.now, mutate)
	}, func(tx *bolt.Tx, r Request) (Request, error) { return putRequest(tx, &old, r) })
	if _, ok := errors.AsType[*ConflictError](refused); ok && err == nil {
		return Request{}, refused
	}
	if err == nil {
		err = refused
	}
	if err != nil {
		return Request{}, fmt.Errorf("transition request %s: %w", id, err)
	}
	return out, nil
}

// Update changes request id without changing its state: mutate's error
// aborts and is returned wrapped; mutate may not change ID or State (use
// Transition). It sets UpdatedAt and returns the request as stored. mutate
// may run more than once (see Bolt).
func (b *Bolt) Update(ctx context.Context, id string, mutate func(*Request) error) (Request, error) {
	var old Request
	out, refused, err := modify(ctx, b, bucketRequests, id, func(r *Request) error {
		old = *r
		return applyUpdate(r, id, b.now, mutate)
	}, func(tx *bolt.Tx, r Request) (Request, error) { return putRequest(tx, &old, r) })
	if err == nil {
		err = refused
	}
	if err != nil {
		return Request{}, fmt.Errorf("update request %s: %w", id, err)
	}
	return out, nil
}

// List returns the requests in any of the given states, or all requests when
// none is given, ordered by CreatedAt (then ID). Given states, it reads
// only the requests in them, through the state index.
func (b *Bolt) List(ctx context.Context, states ...State) ([]Request, error) {
	var out []Request
	err := b.view(ctx, func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketRequests)
		if len(states) == 0 {
			return bk.ForEach(func(k, v []byte) error {
				var r Request
				if err := b.decodes.decode(v, &r); err != nil {
					return fmt.Errorf("decode request %q: %w", k, err)
				}
				out = append(out, r)
				return nil
			})
		}
		c := tx.Bucket(bucketRequestsByState).Cursor()
		for i, s := range states {
			if slices.Contains(states[:i], s) {
				continue
			}
			p := statePrefix(s)
			for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
				if len(k) < len(p)+timeKeyLen {
					return fmt.Errorf("state index entry %q: malformed", k)
				}
				var r Request
				switch err := b.get(bk, string(k[len(p)+timeKeyLen:]), &r); {
				case errors.Is(err, ErrNotFound):
					continue // cannot happen while the index is exact
				case err != nil:
					return err
				}
				if r.State == s {
					out = append(out, r)
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list requests: %w", err)
	}
	sortRequests(out)
	return out, nil
}

// PutJob stores j, replacing any job with the same ID.
func (b *Bolt) PutJob(ctx context.Context, j Job) error {
	if j.ID == "" {
		return errors.New("put job: empty ID")
	}
	err := b.update(ctx, func(tx *bolt.Tx) error {
		var old Job
		switch err := b.get(tx.Bucket(bucketJobs), j.ID, &old); {
		case errors.Is(err, ErrNotFound):
			_, err := putJob(tx, nil, j)
			return err
		case err != nil:
			return err
		}
		_, err := putJob(tx, &old, j)
		return err
	})
	if err != nil {
		return fmt.Errorf("put job %s: %w", j.ID, err)
	}
	return nil
}

// putJob saves j, which was old before (nil for a new job), keeps the
// by-request and active indexes in step, and returns j as stored.
func putJob(tx *bolt.Tx, old *Job, j Job) (Job, error) {
	data, err := json.Marshal(j)
	if err != nil {
		return Job{}, fmt.Errorf("encode: %w", err)
	}
	if err := tx.Bucket(bucketJobs).Put([]byte(j.ID), data); err != nil {
		return Job{}, fmt.Errorf("save: %w", err)
	}
	if err := reindex(tx, jobIndexes, j.ID, old, &j); err != nil {
		return Job{}, err
	}
	var out Job
	if err := json.Unmarshal(data, &out); err != nil {
		return Job{}, fmt.Errorf("decode: %w", err)
	}
	return out, nil
}

// Job returns the job with the given ID, or an error wrapping ErrNotFound.
func (b *Bolt) Job(ctx context.Context, id string) (Job, error) {
	var j Job
	err := b.view(ctx, func(tx *bolt.Tx) error {
		return b.get(tx.Bucket(bucketJobs), id, &j)
	})
	if err != nil {
		return Job{}, fmt.Errorf("get job %s: %w", id, err)
	}
	return j, nil
}

// UpdateJob reads job id, applies mutate and saves the result in one write
// transaction, and returns the job as stored. If mutate returns an error,
// nothing is saved and the error is returned wrapped, so a caller can use a
// sentinel such as "already reported" to learn that another goroutine or
// replica got there first. mutate may not change the ID, and may run more
// than once (see Bolt).
func (b *Bolt) UpdateJob(ctx context.Context, id string, mutate func(*Job) error) (Job, error) {
	var old Job
	out, refused, err := modify(ctx, b, bucketJobs, id, func(j *Job) error {
		old = *j
		return applyJobUpdate(j, id, mutate)
	}, func(tx *bolt.Tx, j Job) (Job, error) { return putJob(tx, &old, j) })
	if err == nil {
		err = refused
	}
	if err != nil {
		return Job{}, fmt.Errorf("update job %s: %w", id, err)
	}
	return out, nil
}

// Jobs returns the jobs of request requestID, ordered by SubmittedAt, then
// ID. It reads only those jobs, through the by-request index.
func (b *Bolt) Jobs(ctx context.Context, requestID string) ([]Job, error) {
	var out []Job
	err := b.view(ctx, func(tx *bolt.Tx) error {
		jobs := tx.Bucket(bucketJobs)
		prefix := indexKey(requestID, "")
		c := tx.Bucket(bucketJobsByRequest).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			var j Job
			switch err := b.get(jobs, string(k[len(prefix):]), &j); {
			case errors.Is(err, ErrNotFound):
				continue // cannot happen while the index is exact
			case err != nil:
				return err
			}
			out = append(out, j)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list jobs of request %s: %w", requestID, err)
	}
	sortJobs(out)
	return out, nil
}

// ActiveJobs returns the jobs still followed (see Job.Active), ordered by
// SubmittedAt, then ID. It reads only those jobs, through the active index.
func (b *Bolt) ActiveJobs(ctx context.Context) ([]Job, error) {
	var out []Job
	err := b.view(ctx, func(tx *bolt.Tx) error {
		jobs := tx.Bucket(bucketJobs)
		return tx.Bucket(bucketJobsActive).ForEach(func(k, _ []byte) error {
			var j Job
			switch err := b.get(jobs, string(k), &j); {
			case errors.Is(err, ErrNotFound):
				return nil // cannot happen while the index is exact
			case err != nil:
				return err
			}
			if j.Active() {
				out = append(out, j)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list active jobs: %w", err)
	}
	sortJobs(out)
	return out, nil
}

// pruneTxRequests bounds how many requests one transaction of Prune
// deletes, so that it holds the write lock only briefly.
const pruneTxRequests = 64

// Prune deletes at most max requests that are in a final state (see
// State.Final), were last updated before before and are no longer live
// (no job of theirs is still followed, they hold no instance lock), oldest
// first, with their jobs and index entries, and returns how many it
// deleted. It reads the index entries of the requests it deletes (a few
// more at most, and those of the live ones it passes over) and decodes
// only the requests it deletes, so its cost follows what it deletes, not
// how much the file holds; it commits every pruneTxRequests requests. Call it again
// until it returns less than max to delete everything due; a max of 0 or
// less deletes nothing. Requests in other states are never deleted.
//
// The freed pages are reused by later writes; the file does not shrink
// (see CompactBolt).
func (b *Bolt) Prune(ctx context.Context, before time.Time, max int) (int, error) {
	deleted := 0
	for deleted < max {
		if err := ctx.Err(); err != nil {
			return deleted, fmt.Errorf("prune requests final before %s: %w", before.Format(time.RFC3339Nano), err)
		}
		want := min(pruneTxRequests, max-deleted)
		n := 0
		err := syncedUpdate(b.db, func(tx *bolt.Tx) error {
			n = 0
			due := oldestFinal(tx, before, want)
			for _, k := range due {
				if err := b.deleteRequest(tx, k); err != nil {
					return err
				}
			}
			n = len(due)
			return nil
		})
		if err != nil {
			return deleted, fmt.Errorf("prune requests final before %s: %w", before.Format(time.RFC3339Nano), err)
		}
		deleted += n
		if n < want {
			break
		}
	}
	return deleted, nil
}

// finalKey is the state index entry of a request in a final state.
type finalKey struct {
	key    []byte
	prefix int // the length of its state's prefix
}

// when returns the timeKey part of the entry.
func (f finalKey) when() []byte { return f.key[f.prefix : f.prefix+timeKeyLen] }

// oldestFinal returns the state index entries of at most n requests in
// final states last updated before before, oldest first, leaving out the
// requests that are still live (see live). It reads at most n entries of
// each final state, and the ones it leaves out.
func oldestFinal(tx *bolt.Tx, before time.Time, n int) []finalKey {
	limit := timeKey(before)
	var due []finalKey
	c := tx.Bucket(bucketRequestsByState).Cursor()
	for _, s := range finalStates {
		p := statePrefix(s)
		taken := 0
		for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p) && taken < n; k, _ = c.Next() {
			if len(k) < len(p)+timeKeyLen || bytes.Compare(k[len(p):len(p)+timeKeyLen], limit) >= 0 {
				break
			}
			if live(tx, k[len(p)+timeKeyLen:]) {
				continue
			}
			due = append(due, finalKey{key: bytes.Clone(k), prefix: len(p)})
			taken++
		}
	}
	slices.SortFunc(due, func(a, b finalKey) int { return bytes.Compare(a.when(), b.when()) })
	return due[:min(n, len(due))]
}

// live reports whether request id, in a final state, still has work that
// retention must not delete: a job still followed (Active), or an instance
// lock. It reads index entries only.
func live(tx *bolt.Tx, id []byte) bool {
	prefix := indexKey(string(id), "")
	if k, _ := tx.Bucket(bucketLocksByRequest).Cursor().Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) {
		return true
	}
	active := tx.Bucket(bucketJobsActive)
	c := tx.Bucket(bucketJobsByRequest).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		if active.Get(k[len(prefix):]) != nil {
			return true
		}
	}
	return false
}

// deleteRequest deletes the request of state index entry f, its index
// entries, and the request's jobs with theirs. The request is read (and
// counted) to find its entries; its jobs are not, since they are all
// inactive (see live) and so have only their by-request entry.
func (b *Bolt) deleteRequest(tx *bolt.Tx, f finalKey) error {
	id := f.key[f.prefix+timeKeyLen:]
	reqs := tx.Bucket(bucketRequests)
	var r Request
	if err := b.get(reqs, string(id), &r); err != nil {
		return fmt.Errorf("delete request %q: %w", id, err)
	}
	if err := reqs.Delete(id); err != nil {
		return fmt.Errorf("delete request %q: %w", id, err)
	}
	if err := reindex(tx, requestIndexes, string(id), &r, nil); err != nil {
		return fmt.Errorf("delete request %q: %w", id, err)
	}
	if err := tx.Bucket(bucketRequestsByState).Delete(f.key); err != nil {
		return fmt.Errorf("delete request %q: index: %w", id, err)
	}
	byRequest := tx.Bucket(bucketJobsByRequest)
	prefix := indexKey(string(id), "")
	var keys [][]byte
	c := byRequest.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		keys = append(keys, bytes.Clone(k))
	}
	jobs, active := tx.Bucket(bucketJobs), tx.Bucket(bucketJobsActive)
	for _, k := range keys {
		jid := k[len(prefix):]
		if err := errors.Join(jobs.Delete(jid), active.Delete(jid), byRequest.Delete(k)); err != nil {
			return fmt.Errorf("delete job %q of request %q: %w", jid, id, err)
		}
	}
	return nil
}

// Recent returns at most n requests in states for which keep (nil: any)
// holds, newest first by UpdatedAt. It reads each state's index from its
// newest end and stops once n are kept, so its cost follows n and what
// keep skips, not the whole history.
func (b *Bolt) Recent(ctx context.Context, n int, keep func(Request) bool, states ...State) ([]Request, error) {
	var out []Request
	err := b.view(ctx, func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketRequestsByState).Cursor()
		reqs := tx.Bucket(bucketRequests)
		for i, s := range states {
			if slices.Contains(states[:i], s) {
				continue
			}
			p := statePrefix(s)
			// The last key of the state: seek past the prefix and step back.
			end := append(slices.Clone(p[:len(p)-1]), 1)
			k, _ := c.Seek(end)
			if k == nil {
				k, _ = c.Last()
			} else {
				k, _ = c.Prev()
			}
			kept := 0
			for ; k != nil && bytes.HasPrefix(k, p) && kept < n; k, _ = c.Prev() {
				id := string(k[len(p)+timeKeyLen:])
				var r Request
				if err := b.get(reqs, id, &r); err != nil {
					return err
				}
				if keep == nil || keep(r) {
					out = append(out, r)
					kept++
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("recent requests: %w", err)
	}
	return newestFirst(out, n), nil
}

// modify is the one read-modify-write of a record (request or job): in a
// shared commit it reads record id of bucket, lets change alter it or
// refuse, and stores it with save. A missing record (ErrNotFound) and
// change's error are refusals: nothing is written, the commit is not run
// again for them, and they come back as refused; a failure of the store is
// err. change and save may run more than once (see Bolt).
func modify[T any](ctx context.Context, b *Bolt, bucket []byte, id string, change func(*T) error, save func(*bolt.Tx, T) (T, error)) (out T, refused, err error) {
	err = b.update(ctx, func(tx *bolt.Tx) error {
		var zero, v T
		out, refused = zero, nil
		switch err := b.get(tx.Bucket(bucket), id, &v); {
		case errors.Is(err, ErrNotFound):
			refused = err
			return nil
		case err != nil:
			return err
		}
		if err := change(&v); err != nil {
			refused = err
			return nil
		}
		var err error
		out, err = save(tx, v)
		return err
	})
	return out, refused, err
}
