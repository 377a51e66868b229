package store

import (
	"context"
	"fmt"
	"time"
)

// Allow records one hit for key and reports whether it is within limit hits
// per window. Windows are fixed, not sliding and not aligned to the clock:
// a window starts at the first hit after the previous one ended (or the
// first hit ever) and lasts the window given at that hit. Only allowed hits
// are counted; a refused hit changes nothing, in particular it does not
// extend the window. The read, the decision and the write hold one lock, so
// concurrent calls never allow more than limit hits per window. Time comes
// from Options.Now.
//
// The windows are kept in memory, not in the file: a restart forgets them
// (and so allows a new burst), which is fine for a limit on commands per
// minute, and saves a commit per command. Only one process can hold the
// file, so no other process needs to see them; replicas use Redis, which
// shares them. Ended windows are dropped by later calls; past 100,000 keys
// in open windows, a new key drops the window that ends soonest.
//
// An empty key, a limit below 1 or a window of 0 or less is an error.
func (b *Bolt) Allow(ctx context.Context, key string, limit int, window time.Duration) (bool, error) {
	if err := checkAllow(key, limit, window); err != nil {
		return false, fmt.Errorf("allow %q: %w", key, err)
	}
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("allow %q: %w", key, err)
	}
	var allowed bool
	b.limits.update(b.now, key, func(rec *limitRecord, found bool, now time.Time) (time.Time, bool) {
		var save bool
		allowed, save = applyHit(rec, found, limit, window, now)
		return rec.End, save
	})
	return allowed, nil
}

// Remember reports whether key is new: true the first time it is seen, and
// again once ttl has passed since the call that last returned true; false
// for every call in between (which does not extend the ttl). The check and
// the write hold one lock, so of concurrent calls for a new key exactly one
// returns true. Time comes from Options.Now.
//
// The keys are kept in memory, not in the file, like the windows of Allow:
// a restart forgets them, which only matters for a Slack redelivery that
// arrives across a restart, and saves a commit per command. Expired keys
// are dropped by later calls; past 100,000 keys, a new key drops the one
// that expires soonest.
//
// An empty key or a ttl of 0 or less is an error.
func (b *Bolt) Remember(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	if err := checkRemember(key, ttl); err != nil {
		return false, fmt.Errorf("remember %q: %w", key, err)
	}
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("remember %q: %w", key, err)
	}
	var isNew bool
	b.seen.update(b.now, key, func(rec *seenRecord, found bool, now time.Time) (time.Time, bool) {
		isNew = applySeen(rec, found, ttl, now)
		return rec.Until, isNew
	})
	return isNew, nil
}
