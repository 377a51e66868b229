package store

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// openPlanStates are the states of a plan waiting for a decision, the ones
// OpenPlans counts.
var openPlanStates = []State{Planned, AwaitingApproval}

// openPlan reports whether r is a plan waiting for a decision, which the
// per-person index of open plans holds (with its ExpiresAt).
func openPlan(r Request) bool { return slices.Contains(openPlanStates, r.State) }

// DueAt returns when request r is next due for the engine's housekeeping:
// the earliest of WakeAt, the ExpiresAt of a plan waiting for a decision
// (it must be expired), the LeaseUntil of a request submitting (a stalled
// submission must be taken over) and, for a submitted or stopped request
// whose batch answers are not all in the thread yet (ResultsPending), its
// UpdatedAt (they are owed now). The zero time means never: only a write
// can make it due. Due returns the requests whose DueAt has come, read
// through an index that both backends keep in the same transaction as the
// request.
func DueAt(r Request) time.Time {
	t := r.WakeAt
	earliest := func(u time.Time) {
		if !u.IsZero() && (t.IsZero() || u.Before(t)) {
			t = u
		}
	}
	switch r.State {
	case Planned, AwaitingApproval:
		earliest(r.ExpiresAt)
	case Submitting:
		earliest(r.LeaseUntil)
	case Submitted, Stopped:
		if r.ResultsPending {
			earliest(r.UpdatedAt)
		}
	}
	return t
}

// jobDue returns when active job j is next due to be read (its NextPoll,
// or the zero time: now), and whether it is in the index of due jobs at
// all (it is active).
func jobDue(j Job) (time.Time, bool) { return j.NextPoll, j.Active() }

// ErrLocked means an instance lock is held by another request; the error
// is a *LockedError saying which keys and by whom.
var ErrLocked = errors.New("locked by another request")

// LockedError is returned by TransitionLock when mutate asks for a key
// another request holds: nothing is written. Like a *ConflictError it is
// an answer (another request won the instance), not a failure: it wraps
// both ErrLocked and ErrConflict.
type LockedError struct {
	ID   string            // the request that asked
	Held map[string]string // key → the request holding it
}

// Error describes the refusal.
func (e *LockedError) Error() string {
	keys := make([]string, 0, len(e.Held))
	for k := range e.Held {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + " by " + e.Held[k]
	}
	return fmt.Sprintf("request %s: %s held: %v", e.ID, strings.Join(parts, ", "), ErrLocked)
}

// Unwrap returns ErrLocked and ErrConflict.
func (e *LockedError) Unwrap() []error { return []error{ErrLocked, ErrConflict} }

// checkLockKeys refuses an empty key or one with a zero byte (which the
// Bolt index uses as a separator).
func checkLockKeys(keys []string) error {
	for _, k := range keys {
		if k == "" || strings.ContainsRune(k, 0) {
			return fmt.Errorf("invalid lock key %q", k)
		}
	}
	return nil
}

// LockKey returns the key of the lock of an instance of a target, as the
// engine passes it to TransitionLock, Unlock and LockHolders:
// "<target>/<instance-id>".
func LockKey(target, instanceID string) string { return target + "/" + instanceID }

// applyLocks runs a TransitionLock's mutate: with held (keys of keys held
// by other requests) it returns the keys mutate takes, or a *LockedError
// if one of them is held by another request, or mutate's error as is.
func applyLocks(r *Request, id string, held map[string]string, mutate func(*Request, map[string]string) ([]string, error)) ([]string, error) {
	if mutate == nil {
		return nil, nil
	}
	take, err := mutate(r, held)
	if err != nil {
		return nil, err
	}
	if err := checkLockKeys(take); err != nil {
		return nil, err
	}
	refused := map[string]string{}
	for _, k := range take {
		if h, ok := held[k]; ok {
			refused[k] = h
		}
	}
	if len(refused) > 0 {
		return nil, &LockedError{ID: id, Held: refused}
	}
	slices.Sort(take)
	return slices.Compact(take), nil
}
