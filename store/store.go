// Package store keeps the state that must survive a restart: patch requests
// with their state machine, and the cloud jobs being followed. It wraps bbolt,
// an embedded single-file database; values are stored as JSON.
//
// Every state change is a compare-and-swap (Bolt.Transition) inside one
// write transaction, so that of two concurrent attempts to move a request
// out of the same state exactly one wins. That is what makes a double click,
// a Slack redelivery or two replicas sharing a file harmless.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// State is where a patch request is in its life:
//
//	planned → (awaiting_approval → approved)? → submitting → submitted → done
//
// and from planned or awaiting_approval: cancelled, rejected, expired.
// The store does not enforce which transitions are allowed; callers say which
// states they expect to move from.
type State string

// The states of a patch request.
const (
	Planned          State = "planned"
	AwaitingApproval State = "awaiting_approval"
	Approved         State = "approved"
	Submitting       State = "submitting"
	Submitted        State = "submitted"
	Done             State = "done"
	Cancelled        State = "cancelled"
	Rejected         State = "rejected"
	Expired          State = "expired"
)

// Final reports whether s is a state a request never leaves: done,
// cancelled, rejected or expired.
func (s State) Final() bool {
	switch s {
	case Done, Cancelled, Rejected, Expired:
		return true
	}
	return false
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
	DryRun      bool            `json:"dry_run,omitempty"`
	Force       bool            `json:"force,omitempty"`
	Approver    string          `json:"approver,omitempty"`    // who approved or rejected
	ApprovalTS  string          `json:"approval_ts,omitempty"` // ts of the approval message in Channel
	ParentTS    string          `json:"parent_ts,omitempty"`   // ts of the channel message; thread replies go under it
	CreatedAt   time.Time       `json:"created_at"`
	UpdatedAt   time.Time       `json:"updated_at"`
	ExpiresAt   time.Time       `json:"expires_at,omitzero"`
	History     []Event         `json:"history,omitempty"`
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
}

// Active reports whether the job is still followed: not yet reported and
// not given up.
func (j Job) Active() bool { return !j.Reported && !j.GaveUp }
