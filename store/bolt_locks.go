package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// TransitionLock is TransitionIf that also takes instance locks, in the
// same transaction as the swap: it reads request id and the holders of
// keys, calls mutate with the request and held (the keys of keys that
// another request holds, key → its ID), and takes for id the keys mutate
// returns. If one of them is held by another request it returns a
// *LockedError (errors.Is ErrLocked and ErrConflict) and writes nothing;
// so of two swaps asking for the same key exactly one gets it. A key id
// already holds is kept. mutate may return keys not in keys, which are
// checked the same way, and may run more than once (see Bolt). The commit
// is synced.
func (b *Bolt) TransitionLock(ctx context.Context, id string, from []State, to State, user string, keys []string, mutate func(r *Request, held map[string]string) ([]string, error)) (Request, error) {
	if err := checkTransition(id, from, to); err != nil {
		return Request{}, err
	}
	if err := checkLockKeys(keys); err != nil {
		return Request{}, fmt.Errorf("transition request %s: %w", id, err)
	}
	var out Request
	var refused error
	err := b.update(ctx, func(tx *bolt.Tx) error {
		out, refused = Request{}, nil
		var r Request
		switch err := b.get(tx.Bucket(bucketRequests), id, &r); {
		case errors.Is(err, ErrNotFound):
			refused = err
			return nil
		case err != nil:
			return err
		}
		old := r
		held := lockHolders(tx, id, keys)
		var take []string
		err := applyTransition(&r, id, from, to, user, b.now, func(r *Request) error {
			var err error
			take, err = applyLocks(r, id, held, mutate)
			return err
		})
		if err == nil {
			// Keys mutate returned that were not in keys: checked the same way.
			if h := lockHolders(tx, id, take); len(h) > 0 {
				err = &LockedError{ID: id, Held: h}
			}
		}
		if err != nil {
			refused = err
			return nil
		}
		if err := takeLocks(tx, id, take); err != nil {
			return err
		}
		out, err = putRequest(tx, &old, r)
		return err
	})
	if err == nil {
		if _, ok := errors.AsType[*ConflictError](refused); ok {
			return Request{}, refused
		}
		if _, ok := errors.AsType[*LockedError](refused); ok {
			return Request{}, refused
		}
		err = refused
	}
	if err != nil {
		return Request{}, fmt.Errorf("transition request %s: %w", id, err)
	}
	return out, nil
}

// lockHolders returns the holders of those of keys that a request other
// than id holds.
func lockHolders(tx *bolt.Tx, id string, keys []string) map[string]string {
	held := map[string]string{}
	locks := tx.Bucket(bucketLocks)
	for _, k := range keys {
		if h := locks.Get([]byte(k)); h != nil && string(h) != id {
			held[k] = string(h)
		}
	}
	return held
}

// takeLocks records that request id holds keys.
func takeLocks(tx *bolt.Tx, id string, keys []string) error {
	locks, byRequest := tx.Bucket(bucketLocks), tx.Bucket(bucketLocksByRequest)
	for _, k := range keys {
		if err := errors.Join(locks.Put([]byte(k), []byte(id)), byRequest.Put(indexKey(id, k), nil)); err != nil {
			return fmt.Errorf("lock %s: %w", k, err)
		}
	}
	return nil
}

// Unlock releases those of keys that request id holds (a key held by
// another request, or by none, is left as it is); with no keys it releases
// every lock id holds. The commit is synced.
func (b *Bolt) Unlock(ctx context.Context, id string, keys []string) error {
	err := b.update(ctx, func(tx *bolt.Tx) error {
		locks, byRequest := tx.Bucket(bucketLocks), tx.Bucket(bucketLocksByRequest)
		release := keys
		if len(keys) == 0 {
			release = locksOf(tx, id)
		}
		for _, k := range release {
			if h := locks.Get([]byte(k)); h == nil || string(h) != id {
				continue
			}
			if err := errors.Join(locks.Delete([]byte(k)), byRequest.Delete(indexKey(id, k))); err != nil {
				return fmt.Errorf("unlock %s: %w", k, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("unlock request %s: %w", id, err)
	}
	return nil
}

// locksOf returns the keys request id holds.
func locksOf(tx *bolt.Tx, id string) []string {
	var keys []string
	prefix := indexKey(id, "")
	c := tx.Bucket(bucketLocksByRequest).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		keys = append(keys, string(k[len(prefix):]))
	}
	return keys
}

// LockHolders returns, of keys, those held, each with the ID of the
// request holding it.
func (b *Bolt) LockHolders(ctx context.Context, keys []string) (map[string]string, error) {
	var held map[string]string
	err := b.view(ctx, func(tx *bolt.Tx) error {
		held = lockHolders(tx, "", keys)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read lock holders: %w", err)
	}
	return held, nil
}

// Locks returns the keys request id holds, sorted.
func (b *Bolt) Locks(ctx context.Context, id string) ([]string, error) {
	var keys []string
	err := b.view(ctx, func(tx *bolt.Tx) error {
		keys = locksOf(tx, id)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read locks of request %s: %w", id, err)
	}
	slices.Sort(keys)
	return keys, nil
}
