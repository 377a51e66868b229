package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Allow records one hit for key and reports whether it is within limit hits
// per window, counting the hits of every process sharing the Redis and
// prefix. Windows are fixed, not sliding and not aligned to the clock: a
// window starts at the first hit after the previous one ended (or the first
// hit ever) and lasts the window given at that hit. Only allowed hits are
// counted; a refused hit changes nothing, in particular it does not extend
// the window. The read, the decision and the write are one optimistic
// transaction, so concurrent calls, from any process, never allow more
// than limit hits per window.
//
// The window's start and end are taken from RedisOptions.Now and stored in
// the value under "limit:<key>", so they do not depend on Redis' clock;
// the key's Redis expiry (the rest of the window, from the same clock) only
// reclaims the space once the window is over.
//
// An empty key, a limit below 1 or a window of 0 or less is an error.
func (s *Redis) Allow(ctx context.Context, key string, limit int, window time.Duration) (bool, error) {
	if err := checkAllow(key, limit, window); err != nil {
		return false, fmt.Errorf("allow %q: %w", key, err)
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	rkey := s.key(keyRedisLimit + key)
	var allowed bool
	err := s.atomically(ctx, func(tx *redis.Tx) error {
		var rec limitRecord
		found, err := redisGetRecord(ctx, tx, rkey, &rec)
		if err != nil {
			return err
		}
		now := s.now()
		var save bool
		allowed, save = applyHit(&rec, found, limit, window, now)
		if !save {
			return nil
		}
		return s.setExpiring(ctx, tx, rkey, rec, rec.End.Sub(now))
	}, rkey)
	if err != nil {
		return false, fmt.Errorf("allow %q: %w", key, err)
	}
	return allowed, nil
}

// Remember reports whether key is new: true the first time it is seen by
// any process sharing the Redis and prefix, and again once ttl has passed
// since the call that last returned true; false for every call in between
// (which does not extend the ttl). The check and the write are one
// optimistic transaction, so of concurrent calls for a new key, from any
// process, exactly one returns true.
//
// Until when the key is remembered is taken from RedisOptions.Now and
// stored in the value under "seen:<key>", so it does not depend on Redis'
// clock; the key's Redis expiry (ttl) only reclaims the space.
//
// An empty key or a ttl of 0 or less is an error.
func (s *Redis) Remember(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	if err := checkRemember(key, ttl); err != nil {
		return false, fmt.Errorf("remember %q: %w", key, err)
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	rkey := s.key(keyRedisSeen + key)
	var isNew bool
	err := s.atomically(ctx, func(tx *redis.Tx) error {
		var rec seenRecord
		found, err := redisGetRecord(ctx, tx, rkey, &rec)
		if err != nil {
			return err
		}
		if isNew = applySeen(&rec, found, ttl, s.now()); !isNew {
			return nil
		}
		return s.setExpiring(ctx, tx, rkey, rec, ttl)
	}, rkey)
	if err != nil {
		return false, fmt.Errorf("remember %q: %w", key, err)
	}
	return isNew, nil
}

// redisGetRecord reads key through c into v and reports whether it exists.
func redisGetRecord(ctx context.Context, c redis.Cmdable, key string, v any) (bool, error) {
	switch err := redisGetJSON(ctx, c, key, v); {
	case errors.Is(err, ErrNotFound):
		return false, nil
	case err != nil:
		return false, err
	}
	return true, nil
}

// setExpiring writes rec as JSON to key, which tx watches, in one
// MULTI/EXEC, to expire after ttl rounded up to whole milliseconds.
func (s *Redis) setExpiring(ctx context.Context, tx *redis.Tx, key string, rec any, ttl time.Duration) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	ttl = max(ttl, time.Millisecond)
	ttl = (ttl + time.Millisecond - 1).Truncate(time.Millisecond)
	_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, key, data, ttl)
		return nil
	})
	return err
}
