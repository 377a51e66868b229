package store

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"
)

// lockKey returns the full name of the key of lock k.
func (s *Redis) lockKey(k string) string { return s.prefix + keyRedisLock + k }

// TransitionLock is TransitionIf that also takes instance locks, in the
// same transaction as the swap: it watches request id and the lock keys of
// keys, reads the request and the holders of keys, calls mutate with the
// request and held (the keys of keys that another request holds, key →
// its ID), and takes for id the keys mutate returns, in the MULTI/EXEC
// that saves the request. If one of them is held by another request it
// returns a *LockedError (errors.Is ErrLocked and ErrConflict) and writes
// nothing; a concurrent taker changes a watched key, so the transaction is
// run again and sees it: of two swaps asking for the same key exactly one
// gets it. A key id already holds is kept. mutate may return keys not in
// keys, which are then watched and checked the same way, and may run more
// than once. The write then waits for a replica (see WithDurable).
func (s *Redis) TransitionLock(ctx context.Context, id string, from []State, to State, user string, keys []string, mutate func(r *Request, held map[string]string) ([]string, error)) (Request, error) {
	if err := checkTransition(id, from, to); err != nil {
		return Request{}, err
	}
	if err := checkLockKeys(keys); err != nil {
		return Request{}, fmt.Errorf("transition request %s: %w", id, err)
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	key := s.key(keyRedisRequest + id)
	watched := []string{key}
	for _, k := range keys {
		watched = append(watched, s.lockKey(k))
	}
	var out Request
	err := s.atomically(ctx, func(tx *redis.Tx) error {
		var r Request
		if err := s.getJSON(ctx, tx, key, &r); err != nil {
			return err
		}
		held, err := s.holders(ctx, tx, id, keys)
		if err != nil {
			return err
		}
		old := r
		var take []string
		err = applyTransition(&r, id, from, to, user, s.now, func(r *Request) error {
			var err error
			take, err = applyLocks(r, id, held, mutate)
			return err
		})
		if err != nil {
			return err
		}
		if extra := slices.DeleteFunc(slices.Clone(take), func(k string) bool { return slices.Contains(keys, k) }); len(extra) > 0 {
			lk := make([]string, len(extra))
			for i, k := range extra {
				lk[i] = s.lockKey(k)
			}
			if err := tx.Watch(ctx, lk...).Err(); err != nil {
				return fmt.Errorf("watch %s…: %w", lk[0], err)
			}
			h, err := s.holders(ctx, tx, id, extra)
			if err != nil {
				return err
			}
			if len(h) > 0 {
				return &LockedError{ID: id, Held: h}
			}
		}
		data, err := jsonEncode(r)
		if err != nil {
			return err
		}
		if _, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			s.setRequest(ctx, p, &old, r, data)
			for _, k := range take {
				p.Set(ctx, s.lockKey(k), id, 0)
				p.SAdd(ctx, s.key(keyRedisRequestLocks+id), k)
			}
			return nil
		}); err != nil {
			return err
		}
		s.waitReplica(ctx, tx)
		return jsonDecode(data, &out)
	}, watched...)
	if _, ok := errors.AsType[*ConflictError](err); ok {
		return Request{}, err
	}
	if _, ok := errors.AsType[*LockedError](err); ok {
		return Request{}, err
	}
	if err != nil {
		return Request{}, fmt.Errorf("transition request %s: %w", id, err)
	}
	return out, nil
}

// holders reads through c the holders of those of keys that a request
// other than id holds.
func (s *Redis) holders(ctx context.Context, c redis.Cmdable, id string, keys []string) (map[string]string, error) {
	held := map[string]string{}
	if len(keys) == 0 {
		return held, nil
	}
	lk := make([]string, len(keys))
	for i, k := range keys {
		lk[i] = s.lockKey(k)
	}
	vals, err := c.MGet(ctx, lk...).Result()
	if err != nil {
		return nil, fmt.Errorf("read %s…: %w", lk[0], err)
	}
	for i, v := range vals {
		if h, ok := v.(string); ok && h != id {
			held[keys[i]] = h
		}
	}
	return held, nil
}

// Unlock releases those of keys that request id holds (a key held by
// another request, or by none, is left as it is); with no keys it releases
// every lock id holds. The write then waits for a replica (see
// WithDurable).
func (s *Redis) Unlock(ctx context.Context, id string, keys []string) error {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	setKey := s.key(keyRedisRequestLocks + id)
	err := s.atomically(ctx, func(tx *redis.Tx) error {
		release := keys
		if len(release) == 0 {
			var err error
			if release, err = tx.SMembers(ctx, setKey).Result(); err != nil {
				return fmt.Errorf("read %s: %w", setKey, err)
			}
		}
		if len(release) == 0 {
			return nil
		}
		lk := make([]string, len(release))
		for i, k := range release {
			lk[i] = s.lockKey(k)
		}
		if err := tx.Watch(ctx, lk...).Err(); err != nil {
			return fmt.Errorf("watch %s…: %w", lk[0], err)
		}
		vals, err := tx.MGet(ctx, lk...).Result()
		if err != nil {
			return fmt.Errorf("read %s…: %w", lk[0], err)
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			for i, v := range vals {
				if h, ok := v.(string); ok && h == id {
					p.Del(ctx, lk[i])
				}
				p.SRem(ctx, setKey, release[i])
			}
			return nil
		})
		if err == nil {
			s.waitReplica(ctx, tx)
		}
		return err
	}, setKey)
	if err != nil {
		return fmt.Errorf("unlock request %s: %w", id, err)
	}
	return nil
}

// LockHolders returns, of keys, those held, each with the ID of the
// request holding it.
func (s *Redis) LockHolders(ctx context.Context, keys []string) (map[string]string, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	held, err := s.holders(ctx, s.rdb, "", keys)
	if err != nil {
		return nil, fmt.Errorf("read lock holders: %w", err)
	}
	return held, nil
}

// Locks returns the keys request id holds, sorted.
func (s *Redis) Locks(ctx context.Context, id string) ([]string, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	key := s.key(keyRedisRequestLocks + id)
	keys, err := s.rdb.SMembers(ctx, key).Result()
	if err != nil {
		return nil, fmt.Errorf("read locks of request %s: read %s: %w", id, key, err)
	}
	slices.Sort(keys)
	return keys, nil
}
