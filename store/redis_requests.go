package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"
)

// setRequest queues the writes that save request r, encoded as data, and
// keep its indexes in step; old is the request as it was (nil for a new
// request).
func (s *Redis) setRequest(ctx context.Context, p redis.Pipeliner, old *Request, r Request, data []byte) {
	p.Set(ctx, s.key(keyRedisRequest+r.ID), data, 0)
	p.ZAdd(ctx, s.key(keyRedisRequests), redis.Z{Score: msScore(r.CreatedAt), Member: r.ID})
	if old != nil && old.State != r.State {
		p.ZRem(ctx, s.stateKey(old.State), r.ID)
	}
	p.ZAdd(ctx, s.stateKey(r.State), redis.Z{Score: usScore(r.UpdatedAt), Member: r.ID})
	s.indexRequest(ctx, p, old, r)
}

// Create stores a new request. It sets CreatedAt and UpdatedAt to now when
// they are zero, and returns an error wrapping ErrExists if the ID is taken.
func (s *Redis) Create(ctx context.Context, r Request) error {
	if err := prepareCreate(&r, s.now); err != nil {
		return err
	}
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("create request %s: encode: %w", r.ID, err)
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	key := s.key(keyRedisRequest + r.ID)
	err = s.atomically(ctx, func(tx *redis.Tx) error {
		n, err := tx.Exists(ctx, key).Result()
		if err != nil {
			return fmt.Errorf("read %s: %w", key, err)
		}
		if n > 0 {
			return ErrExists
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			s.setRequest(ctx, p, nil, r, data)
			return nil
		})
		if err == nil && durable(ctx) {
			s.waitReplica(ctx, tx)
		}
		return err
	}, key)
	if err != nil {
		return fmt.Errorf("create request %s: %w", r.ID, err)
	}
	return nil
}

// Get returns the request with the given ID, or an error wrapping
// ErrNotFound.
func (s *Redis) Get(ctx context.Context, id string) (Request, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	var r Request
	if err := s.getJSON(ctx, s.rdb, s.key(keyRedisRequest+id), &r); err != nil {
		return Request{}, fmt.Errorf("get request %s: %w", id, err)
	}
	return r, nil
}

// Transition moves request id from one of the states in from to state to,
// atomically, also against other processes using the same Redis and prefix:
// if the request is in none of them, it returns a *ConflictError (errors.Is
// ErrConflict) and changes nothing. Otherwise it applies mutate (which may
// be nil, and cannot change the ID), sets State, appends an Event by user,
// sets UpdatedAt and saves, all in one transaction, and returns the request
// as stored.
func (s *Redis) Transition(ctx context.Context, id string, from []State, to State, user string, mutate func(*Request)) (Request, error) {
	return s.TransitionIf(ctx, id, from, to, user, orNoError(mutate))
}

// TransitionIf is Transition with a mutate that may refuse: when mutate
// returns an error, nothing is written and the error is returned wrapped
// (test for it with errors.Is or errors.As). It lets a caller check, in
// the same transaction as the swap, more than the state. mutate may run
// more than once (when another writer changed the request meanwhile).
func (s *Redis) TransitionIf(ctx context.Context, id string, from []State, to State, user string, mutate func(*Request) error) (Request, error) {
	if err := checkTransition(id, from, to); err != nil {
		return Request{}, err
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	key := s.key(keyRedisRequest + id)
	var out Request
	err := s.atomically(ctx, func(tx *redis.Tx) error {
		var r Request
		if err := s.getJSON(ctx, tx, key, &r); err != nil {
			return err
		}
		old := r
		if err := applyTransition(&r, id, from, to, user, s.now, mutate); err != nil {
			return err
		}
		var err error
		out, err = s.saveRequest(ctx, tx, &old, r)
		return err
	}, key)
	if _, ok := errors.AsType[*ConflictError](err); ok {
		return Request{}, err // as Bolt returns it
	}
	if err != nil {
		return Request{}, fmt.Errorf("transition request %s: %w", id, err)
	}
	return out, nil
}

// saveRequest writes r, whose key tx watches and which was old before,
// and its indexes in one MULTI/EXEC, and returns r as stored. With a ctx
// from WithDurable it then waits for a replica (waitReplica).
func (s *Redis) saveRequest(ctx context.Context, tx *redis.Tx, old *Request, r Request) (Request, error) {
	data, err := json.Marshal(r)
	if err != nil {
		return Request{}, fmt.Errorf("encode: %w", err)
	}
	if _, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
		s.setRequest(ctx, p, old, r, data)
		return nil
	}); err != nil {
		return Request{}, err
	}
	if durable(ctx) {
		s.waitReplica(ctx, tx)
	}
	var out Request
	if err := json.Unmarshal(data, &out); err != nil {
		return Request{}, fmt.Errorf("decode: %w", err)
	}
	return out, nil
}

// Update changes request id without changing its state, atomically: mutate's
// error aborts and is returned wrapped; mutate may not change ID or State
// (use Transition). It sets UpdatedAt and returns the request as stored.
func (s *Redis) Update(ctx context.Context, id string, mutate func(*Request) error) (Request, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	key := s.key(keyRedisRequest + id)
	var out Request
	err := s.atomically(ctx, func(tx *redis.Tx) error {
		var r Request
		if err := s.getJSON(ctx, tx, key, &r); err != nil {
			return err
		}
		old := r
		if err := applyUpdate(&r, id, s.now, mutate); err != nil {
			return err
		}
		var err error
		out, err = s.saveRequest(ctx, tx, &old, r)
		return err
	}, key)
	if err != nil {
		return Request{}, fmt.Errorf("update request %s: %w", id, err)
	}
	return out, nil
}

// List returns the requests in any of the given states, or all requests when
// none is given, ordered by CreatedAt (then ID). Given states, it reads
// only the requests in them, through the state index.
func (s *Redis) List(ctx context.Context, states ...State) ([]Request, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	ids, err := s.listIDs(ctx, states)
	if err != nil {
		return nil, fmt.Errorf("list requests: %w", err)
	}
	var out []Request
	err = s.mget(ctx, keyRedisRequest, ids, func(id string, data []byte) error {
		var r Request
		if err := s.decodes.decode(data, &r); err != nil {
			return fmt.Errorf("decode request %q: %w", id, err)
		}
		if len(states) == 0 || slices.Contains(states, r.State) {
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list requests: %w", err)
	}
	sortRequests(out)
	return out, nil
}

// listIDs returns the IDs of the requests in states, read from their
// indexes in one MULTI/EXEC, or of all requests when states is empty.
func (s *Redis) listIDs(ctx context.Context, states []State) ([]string, error) {
	if len(states) == 0 {
		ids, err := s.rdb.ZRange(ctx, s.key(keyRedisRequests), 0, -1).Result()
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", s.key(keyRedisRequests), err)
		}
		return ids, nil
	}
	var cmds []*redis.StringSliceCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for i, st := range states {
			if !slices.Contains(states[:i], st) {
				cmds = append(cmds, p.ZRange(ctx, s.stateKey(st), 0, -1))
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read %s…: %w", s.stateKey(states[0]), err)
	}
	var ids []string
	for _, c := range cmds {
		ids = append(ids, c.Val()...)
	}
	slices.Sort(ids)
	return slices.Compact(ids), nil
}

// mget reads the keys name+id for ids, in chunks, and calls fn for each
// that exists. An ID whose record is missing is skipped: that can only be
// an index entry read before the record was deleted (Prune).
func (s *Redis) mget(ctx context.Context, name string, ids []string, fn func(id string, data []byte) error) error {
	for chunk := range slices.Chunk(ids, redisMGetChunk) {
		keys := make([]string, len(chunk))
		for i, id := range chunk {
			keys[i] = s.key(name + id)
		}
		vals, err := s.rdb.MGet(ctx, keys...).Result()
		if err != nil {
			return fmt.Errorf("read %s…: %w", keys[0], err)
		}
		for i, v := range vals {
			str, ok := v.(string)
			if !ok {
				continue
			}
			if err := fn(chunk[i], []byte(str)); err != nil {
				return err
			}
		}
	}
	return nil
}

// recentPage is how many IDs Recent reads from a state's index at a time.
const recentPage = 50

// Recent returns at most n requests in states for which keep (nil: any)
// holds, newest first by UpdatedAt, reading each state's sorted set from
// its newest end a page at a time and stopping once n are kept.
func (s *Redis) Recent(ctx context.Context, n int, keep func(Request) bool, states ...State) ([]Request, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	var out []Request
	for i, st := range states {
		if slices.Contains(states[:i], st) {
			continue
		}
		kept := 0
		for start := int64(0); kept < n; start += recentPage {
			ids, err := s.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{Key: s.stateKey(st), Start: start, Stop: start + recentPage - 1, Rev: true}).Result()
			if err != nil {
				return nil, fmt.Errorf("recent requests: read %s: %w", s.stateKey(st), err)
			}
			if len(ids) == 0 {
				break
			}
			err = s.mget(ctx, keyRedisRequest, ids, func(_ string, data []byte) error {
				if kept >= n {
					return nil
				}
				var r Request
				if err := s.decodes.decode(data, &r); err != nil {
					return err
				}
				if keep == nil || keep(r) {
					out = append(out, r)
					kept++
				}
				return nil
			})
			if err != nil {
				return nil, fmt.Errorf("recent requests: %w", err)
			}
			if len(ids) < recentPage {
				break
			}
		}
	}
	return newestFirst(out, n), nil
}
