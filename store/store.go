// Package store keeps the state that must survive a restart: patch requests
// with their state machine, and the cloud jobs being followed. It has two
// backends with the same methods and semantics: Bolt, an embedded
// single-file bbolt database (the default), and Redis, which several bot
// replicas can share. Both store values as JSON.
//
// Every state change is a compare-and-swap (Bolt.Transition,
// Redis.Transition) inside one transaction, so that of two concurrent
// attempts to move a request out of the same state exactly one wins. That is
// what makes a double click, a Slack redelivery or two replicas sharing a
// store harmless.
//
// Reads cost what they return, not what the store holds: each backend keeps
// indexes, written in the same transaction as the records, of the requests
// by state (and, within a state, by UpdatedAt), of the active jobs and of
// each request's jobs; List of some states, ActiveJobs and Jobs read only
// through them (Decoded counts what was read, for tests). Prune deletes
// requests in a final state, with their jobs, oldest first, reading only
// what it deletes; the bot calls it in small batches to keep its retention.
// Bolt files and Redis prefixes written before the indexes existed get them
// when opened.
//
// Counting and housekeeping read indexes too, never the whole open set:
// OpenPlans counts one person's plans waiting for a decision from a
// per-person index of their expiries (decoding nothing); Due returns the
// requests whose DueAt (WakeAt, a plan's ExpiresAt, a submission's
// LeaseUntil, owed batch answers) has come, and DueJobs the active jobs
// whose NextPoll has come, each reading only what it returns. The engine
// sets WakeAt and NextPoll; a request stays due until a write moves its
// DueAt. Requests written before WakeAt existed have none: the engine
// should look at the open states once (List) after it starts.
//
// Instance locks (TransitionLock, Unlock, LockHolders, Locks) make "one
// instance, one patch at a time" a property of the store: a lock key
// (LockKey: "<target>/<instance-id>") names the request holding it, and is
// taken only in the same transaction as a request's swap, so of two swaps
// asking for one instance exactly one gets it and the other gets a
// *LockedError. Prune never deletes a request that holds a lock or has a
// job still followed.
//
// What a crash can lose. Every write but one is committed durably before
// the method returns: every transition (into submitting above all), every
// claim, lock, job and outcome. The exception is the Create of a plan
// waiting for a decision, which Bolt commits without waiting for fsync:
// it is synced by the next synced commit or within 100 ms. A crash of the
// process loses nothing (the write is in the operating system's cache); a
// power loss or kernel crash in those 100 ms can lose the plans written in
// them, which costs nothing (the click on a lost plan is refused, the user
// runs the command again), and, rarely, leave the file's last commit
// pointing at pages that never reached the disk: OpenWith's check then
// refuses the file (restore it from a backup). Never a submission or a
// claim. On Redis what survives a crash is Redis' own persistence; after a
// failover to a replica, the last writes of the old primary can be lost.
// Writes made with a ctx from WithDurable (the claim of a wave and the
// write before a batch call) and TransitionLock and Unlock wait, on their
// own connection, for one replica to acknowledge them (WAIT, at most
// RedisOptions.WaitTimeout, only when the server has replicas, never
// failing the write), so that a failover is unlikely to lose them.
//
// Allow and Remember (the per-person command limit and the redelivery
// check) are kept in Redis by Redis, so that replicas share them, and in
// memory by Bolt, whose file only one process can hold: they matter for
// minutes, and a restart forgetting them is harmless.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// State is where a patch request is in its life:
//
//	planned → (awaiting_approval → approved)? → submitting → submitted → done
//
// and from planned or awaiting_approval: cancelled, rejected, expired; a
// submitted request whose canary went wrong: paused; a submitted or paused
// request that is told to stop: stopped. The store does not enforce which
// transitions are allowed (package patch owns that table); callers say
// which states they expect to move from. It indexes requests by state, so a List of a few
// states reads only the requests in them, and it deletes requests in a
// final state through Prune.
type State string

// The states of a patch request.
const (
	Planned          State = "planned"
	AwaitingApproval State = "awaiting_approval"
	Approved         State = "approved"
	Submitting       State = "submitting"
	Submitted        State = "submitted"
	Paused           State = "paused" // a canary went wrong; waiting for Continue or Stop
	Done             State = "done"
	Cancelled        State = "cancelled"
	Rejected         State = "rejected"
	Expired          State = "expired"
	Stopped          State = "stopped"
)

// finalStates are the states for which State.Final holds, the ones Prune
// deletes requests from.
var finalStates = []State{Done, Cancelled, Rejected, Expired, Stopped}

// Final reports whether s is a state a request never leaves: done,
// cancelled, rejected, expired or stopped. Prune deletes only requests in
// a final state.
func (s State) Final() bool {
	return slices.Contains(finalStates, s)
}

// Errors returned, wrapped, by the store; test for them with errors.Is.
var (
	// ErrNotFound means there is no request or job with that ID.
	ErrNotFound = errors.New("not found")
	// ErrConflict means the request was not in a state the caller expected;
	// the error is a *ConflictError saying which state it was in.
	ErrConflict = errors.New("state conflict")
	// ErrExists means a request with that ID already exists.
	ErrExists = errors.New("already exists")
)

// ExpiredError refuses a swap of a plan past its ExpiresAt. The store knows
// no TTL rule: the caller (package patch, which decides which moves the
// TTL applies to) returns it from the swap's mutate, so the TTL is part of
// the swap and a click that arrived just before expiry and was slow to be
// checked can never patch an expired plan. It wraps ErrConflict: like a
// lost race it is an answer, not a failure.
type ExpiredError struct {
	ID        string
	ExpiresAt time.Time
}

// Error describes the refusal.
func (e *ExpiredError) Error() string {
	return fmt.Sprintf("request %s expired at %s: %v", e.ID, e.ExpiresAt.UTC().Format(time.RFC3339), ErrConflict)
}

// Unwrap returns ErrConflict.
func (e *ExpiredError) Unwrap() error { return ErrConflict }

// ConflictError is returned by Transition when the request is not in one of
// the expected states. It wraps ErrConflict and carries the actual state, so
// that a loser can tell the user what happened ("already submitted").
type ConflictError struct {
	ID   string  // the request
	Want []State // the states the caller expected
	Got  State   // the state the request is in
}

// Error describes the conflict.
func (e *ConflictError) Error() string {
	want := make([]string, len(e.Want))
	for i, s := range e.Want {
		want[i] = string(s)
	}
	return fmt.Sprintf("request %s is %s, not %s: %v", e.ID, e.Got, strings.Join(want, " or "), ErrConflict)
}

// Unwrap returns ErrConflict, so that errors.Is(err, ErrConflict) holds.
func (e *ConflictError) Unwrap() error { return ErrConflict }

// Event is one state change of a request.
type Event struct {
	At   time.Time `json:"at"`
	From State     `json:"from"`
	To   State     `json:"to"`
	User string    `json:"user,omitempty"` // Slack user ID, or "" for the bot itself (expiry)
}

// Request is a patch request: what was asked, by whom, where its messages
// are, and how far it got.
type Request struct {
	ID          string          `json:"id"`
	State       State           `json:"state"`
	Requester   string          `json:"requester"`              // Slack user ID
	Channel     string          `json:"channel"`                // Slack channel ID
	Text        string          `json:"text"`                   // the command text as typed
	ResponseURL string          `json:"response_url,omitempty"` // slash command's response_url, to update the ephemeral plan
	Plan        json.RawMessage `json:"plan,omitempty"`         // opaque to the store; must be valid JSON
	Results     json.RawMessage `json:"results,omitempty"`      // opaque batch results; must be valid JSON
	Force       bool            `json:"force,omitempty"`
	// Rollout is how the request's instances go out (waves, canary,
	// maintenance windows) and how far that got: opaque to the store,
	// owned by package patch; must be valid JSON. Requests written before
	// it existed have none.
	Rollout json.RawMessage `json:"rollout,omitempty"`
	// Owner and LeaseUntil mark which process is submitting the request
	// and until when it promises to renew that claim; another process
	// recovers a request left submitting only after the lease ran out.
	Owner      string    `json:"owner,omitempty"`
	LeaseUntil time.Time `json:"lease_until,omitzero"`
	// SummaryBy and SummaryUntil claim the posting of the final summary,
	// so exactly one process posts it and a failed post is tried again.
	SummaryBy    string    `json:"summary_by,omitempty"`
	SummaryUntil time.Time `json:"summary_until,omitzero"`
	// InFlight lists the instances of the batch call being made: set, under
	// the lease, right before the call and cleared with its answers. A
	// process that takes a stalled submission over reports these as
	// unknown (the call may have reached GeminiDB) and the instances that
	// have neither an answer nor a place here as not sent.
	InFlight []string `json:"in_flight,omitempty"`
	// Posted counts, per thread report ("results", "summary"), the parts
	// (messages) already posted, so a report that failed half-way is
	// finished on a later tick without posting a part twice.
	Posted map[string]int `json:"posted,omitempty"`
	// ResultsPending is set when a submission is claimed and cleared once
	// every part of the batch answers is in the thread; until then no job's
	// end is reported (its job ID comes first) and no summary is posted.
	ResultsPending bool      `json:"results_pending,omitempty"`
	Team           string    `json:"team,omitempty"`        // Slack team (workspace) of the requester
	Approver       string    `json:"approver,omitempty"`    // who approved or rejected
	ApprovalTS     string    `json:"approval_ts,omitempty"` // ts of the approval message in Channel
	ParentTS       string    `json:"parent_ts,omitempty"`   // ts of the channel message; thread replies go under it
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
	ExpiresAt      time.Time `json:"expires_at,omitzero"`
	History        []Event   `json:"history,omitempty"`

	// Target names the GeminiDB target (project and region) the request
	// belongs to for its whole life; "" (a request stored before targets
	// existed) means the bot's default target.
	Target string `json:"target,omitempty"`

	// WakeAt is when the engine next wants to look at the request (a
	// window opens, a summary is owed: now); zero means only an event (a
	// job's end, a click) makes it due. Due returns a request once the
	// earliest of WakeAt and the times the store knows (see DueAt) has
	// come, and keeps returning it until a write moves that time.
	WakeAt time.Time `json:"wake_at,omitzero"`
}

// Job is one instance's patch job in the cloud, as far as the bot follows it.
type Job struct {
	ID            string    `json:"id"` // the cloud's job ID
	RequestID     string    `json:"request_id"`
	InstanceID    string    `json:"instance_id"`
	InstanceName  string    `json:"instance_name"`
	Status        string    `json:"status,omitempty"` // Running, Completed, Failed, or "" before the first poll
	Progress      string    `json:"progress,omitempty"`
	FailReason    string    `json:"fail_reason,omitempty"`
	VersionBefore string    `json:"version_before,omitempty"`
	SubmittedAt   time.Time `json:"submitted_at"`
	Started       time.Time `json:"started,omitzero"`
	Ended         time.Time `json:"ended,omitzero"`
	LastPolled    time.Time `json:"last_polled,omitzero"`
	PollErrors    int       `json:"poll_errors,omitempty"`
	Reported      bool      `json:"reported,omitempty"` // the thread reply for its end was posted
	GaveUp        bool      `json:"gave_up,omitempty"`  // stopped following it (too old)
	// PollBy and PollUntil claim the next read of the job, so that of
	// several replicas one reads it per poll interval.
	PollBy    string    `json:"poll_by,omitempty"`
	PollUntil time.Time `json:"poll_until,omitzero"`
	// NextPoll is when the job is next due to be read; zero (a new job, or
	// one stored before the field existed) means now. DueJobs returns the
	// active jobs whose NextPoll has come; the poller sets it with each
	// read it records.
	NextPoll time.Time `json:"next_poll,omitzero"`
}

// Active reports whether the job is still followed: not yet reported and
// not given up.
func (j Job) Active() bool { return !j.Reported && !j.GaveUp }

// decodeCounter counts the stored requests and jobs a store has read and
// decoded, for the Decoded method of each backend.
type decodeCounter struct{ n atomic.Int64 }

// decode counts one record read from the store and decodes data into v.
func (c *decodeCounter) decode(data []byte, v any) error {
	c.n.Add(1)
	return json.Unmarshal(data, v)
}

// The rules below are shared by the backends, so that they agree on what a
// create, a transition or an update does to a record; each backend only
// supplies the reading, the writing and the atomicity.

// prepareCreate checks a request about to be created and fills in
// CreatedAt and UpdatedAt when they are zero.
func prepareCreate(r *Request, now func() time.Time) error {
	if r.ID == "" {
		return errors.New("create request: empty ID")
	}
	t := now()
	if r.CreatedAt.IsZero() {
		r.CreatedAt = t
	}
	if r.UpdatedAt.IsZero() {
		r.UpdatedAt = t
	}
	return nil
}

// checkTransition checks the arguments of a Transition before anything is
// read.
func checkTransition(id string, from []State, to State) error {
	if len(from) == 0 || to == "" {
		return fmt.Errorf("transition request %s: from %v to %q: no states given", id, from, to)
	}
	return nil
}

// applyTransition moves r, the stored request id, from one of the states in
// from to state to: it returns a *ConflictError if r is in none of them;
// otherwise it applies mutate (which may be nil), returning its error as
// is (r must then not be saved), restores the ID, sets State and UpdatedAt
// and appends an Event by user.
func applyTransition(r *Request, id string, from []State, to State, user string, now func() time.Time, mutate func(*Request) error) error {
	if !slices.Contains(from, r.State) {
		return &ConflictError{ID: id, Want: slices.Clone(from), Got: r.State}
	}
	t := now()
	old := r.State
	if mutate != nil {
		if err := mutate(r); err != nil {
			return err
		}
	}
	r.ID = id
	r.State = to
	r.UpdatedAt = t
	r.History = append(r.History, Event{At: t, From: old, To: to, User: user})
	return nil
}

// orNoError adapts the mutate of a Transition, which cannot refuse, to
// that of TransitionIf.
func orNoError(mutate func(*Request)) func(*Request) error {
	if mutate == nil {
		return nil
	}
	return func(r *Request) error { mutate(r); return nil }
}

// applyUpdate applies mutate to r, the stored request id, and sets
// UpdatedAt. mutate's error is returned as is; a mutate that changes the ID
// or the state is refused.
func applyUpdate(r *Request, id string, now func() time.Time, mutate func(*Request) error) error {
	state := r.State
	if err := mutate(r); err != nil {
		return err
	}
	if r.ID != id || r.State != state {
		return fmt.Errorf("mutate changed ID or state (%s → %s); use Transition", state, r.State)
	}
	r.UpdatedAt = now()
	return nil
}

// applyJobUpdate applies mutate to j, the stored job id. mutate's error is
// returned as is; a mutate that changes the ID is refused.
func applyJobUpdate(j *Job, id string, mutate func(*Job) error) error {
	if err := mutate(j); err != nil {
		return err
	}
	if j.ID != id {
		return fmt.Errorf("mutate changed the ID to %q", j.ID)
	}
	return nil
}

// sortRequests orders requests by CreatedAt, then ID, as List returns them.
func sortRequests(rs []Request) {
	slices.SortStableFunc(rs, func(a, b Request) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}

// sortJobs orders jobs by SubmittedAt, then ID, as Jobs and ActiveJobs
// return them.
func sortJobs(jobs []Job) {
	slices.SortStableFunc(jobs, func(a, b Job) int {
		if c := a.SubmittedAt.Compare(b.SubmittedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}

// limitRecord is the state of one rate-limit key: the current window, fixed
// at its first hit, and the hits allowed in it. Redis stores it as JSON; a
// Bolt keeps it in memory.
type limitRecord struct {
	Start time.Time `json:"window_start"`
	End   time.Time `json:"window_end"` // Start + the window given at the first hit
	Count int       `json:"count"`      // allowed hits in the window; refused ones are not counted
}

// seenRecord is the state of one Remember key: until when it is remembered.
type seenRecord struct {
	Until time.Time `json:"expires_at"`
}

// checkAllow checks the arguments of an Allow.
func checkAllow(key string, limit int, window time.Duration) error {
	switch {
	case key == "":
		return errors.New("empty key")
	case limit <= 0:
		return fmt.Errorf("limit %d is not positive", limit)
	case window <= 0:
		return fmt.Errorf("window %v is not positive", window)
	}
	return nil
}

// checkRemember checks the arguments of a Remember.
func checkRemember(key string, ttl time.Duration) error {
	switch {
	case key == "":
		return errors.New("empty key")
	case ttl <= 0:
		return fmt.Errorf("ttl %v is not positive", ttl)
	}
	return nil
}

// applyHit records a hit at now on rec, the stored record of a rate-limit
// key (found is false when there is none), and reports whether the hit is
// allowed and whether rec changed and must be saved. A window ends at
// rec.End; the first hit at or after it starts a new window [now,
// now+window). A refused hit changes nothing.
func applyHit(rec *limitRecord, found bool, limit int, window time.Duration, now time.Time) (allowed, save bool) {
	if !found || !now.Before(rec.End) {
		*rec = limitRecord{Start: now, End: now.Add(window), Count: 1}
		return true, true
	}
	if rec.Count >= limit {
		return false, false
	}
	rec.Count++
	return true, true
}

// applySeen reports whether a Remember at now of a key whose stored record
// is rec (found is false when there is none) sees it for the first time; if
// so it sets rec to remember the key for ttl, and rec must be saved.
func applySeen(rec *seenRecord, found bool, ttl time.Duration, now time.Time) bool {
	if found && now.Before(rec.Until) {
		return false
	}
	*rec = seenRecord{Until: now.Add(ttl)}
	return true
}

// newestFirst orders rs by UpdatedAt, newest first (then ID), and keeps n.
func newestFirst(rs []Request, n int) []Request {
	slices.SortStableFunc(rs, func(a, b Request) int {
		if c := b.UpdatedAt.Compare(a.UpdatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return rs[:min(n, len(rs))]
}
