// Package patch is the engine of geminidb-patch-bot. It owns a patch
// request's life: its states and the moves allowed between them (one
// table, enforced here and nowhere else), the waves its instances go out
// in (canary first, maintenance windows), the claims that let exactly one
// process do each piece of work, who may press what, and what is due for a
// request now. Its Runner carries a person's decision out, sends waves,
// classifies their outcomes and follows the jobs they started.
//
// Every move is a compare-and-swap in the store (store.TransitionIf), and
// every condition a move depends on (a wave not yet sent, its window open,
// the request not stopped, the plan's TTL) is checked inside that swap, so
// that double clicks, Slack redeliveries, replicas sharing one Redis and a
// restart in between all end with each wave sent at most once, never
// after Stop and never outside its window. All that state is in the
// store: a restarted process picks the schedule up where it was.
//
// Time comes from the clock the package is given, which should be the
// store's. The package knows no Slack: it declares the ports it needs
// (Engine, Cloud, Fleet, Reporter) and the bot implements the Reporter.
//
// A click is one Runner verb: Confirm, Approve, Reject, Cancel, Continue,
// Stop, Retry. A verb that starts a wave wins a Send (Lifecycle.Confirm,
// Approve, SendWave, Recover) and its one winner sends the wave batch by
// batch (BeginBatch, the batch call, PutJob, EndBatch) and ends it
// (EndSend). Runner.Tick reads each open request and its jobs, asks Next
// what is due, and calls the verb it names: Expire, SendWave, Recover,
// Pause or, once the final summary is posted under the report claim,
// Finish. Every verb re-checks in its own swap, so acting on a stale Next
// costs a refused call, never a second send.
package patch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// transitions are the moves a request may make, from a state to the states
// it may go to next. Final states have none.
//
//	planned → (awaiting_approval)? → submitting → submitted → done
//	planned, awaiting_approval → cancelled, expired; awaiting_approval → rejected
//	awaiting_approval → planned (the approval request could not be posted)
//	submitted → submitting (the next wave) → submitted
//	submitted → paused (a canary went wrong) → submitted (Continue)
//	submitted, paused → stopped (Stop); submitting → stopped (Stop during a wave)
//	approved (left by an older version) → expired
var transitions = map[store.State][]store.State{
	store.Planned:          {store.AwaitingApproval, store.Submitting, store.Cancelled, store.Expired},
	store.AwaitingApproval: {store.Planned, store.Submitting, store.Cancelled, store.Rejected, store.Expired},
	store.Approved:         {store.Expired},
	store.Submitting:       {store.Submitted, store.Stopped},
	store.Submitted:        {store.Submitting, store.Paused, store.Stopped, store.Done},
	store.Paused:           {store.Submitted, store.Stopped},
}

// Allowed reports whether the table lets a request move from one state to
// another.
func Allowed(from, to store.State) bool {
	return slices.Contains(transitions[from], to)
}

// Store is what the lifecycle needs of a store; store.Bolt and store.Redis
// have it.
type Store interface {
	Create(ctx context.Context, r store.Request) error
	Get(ctx context.Context, id string) (store.Request, error)
	TransitionIf(ctx context.Context, id string, from []store.State, to store.State, user string, mutate func(*store.Request) error) (store.Request, error)
	Update(ctx context.Context, id string, mutate func(*store.Request) error) (store.Request, error)
	Jobs(ctx context.Context, requestID string) ([]store.Job, error)
	UpdateJob(ctx context.Context, id string, mutate func(*store.Job) error) (store.Job, error)
	// Instance locks (see locks.go).
	TransitionLock(ctx context.Context, id string, from []store.State, to store.State, user string, keys []string, mutate func(r *store.Request, held map[string]string) ([]string, error)) (store.Request, error)
	Unlock(ctx context.Context, id string, keys []string) error
	LockHolders(ctx context.Context, keys []string) (map[string]string, error)
	Locks(ctx context.Context, id string) ([]string, error)
}

var (
	_ Store = (*store.Bolt)(nil)
	_ Store = (*store.Redis)(nil)
)

// Lifecycle moves requests through their life in a store. It is safe for
// concurrent use, and so are several Lifecycles (replicas) on one store.
type Lifecycle struct {
	st    Store
	now   func() time.Time
	lease time.Duration
}

// New returns a Lifecycle on st with clock now (the store's; nil means
// time.Now). lease is how long a submission claim lasts unrenewed: one
// batch call and the writes around it.
func New(st Store, now func() time.Time, lease time.Duration) *Lifecycle {
	if now == nil {
		now = time.Now
	}
	return &Lifecycle{st: st, now: now, lease: lease}
}

// IllegalMoveError is a move the transition table does not allow: a bug in
// the caller (or this package), never a race.
type IllegalMoveError struct {
	ID   string
	From []store.State
	To   store.State
}

// Error describes the move.
func (e *IllegalMoveError) Error() string {
	return fmt.Sprintf("request %s: moving from %v to %s is not allowed", e.ID, e.From, e.To)
}

// RefusedError is a verb that found the request in the state it expected
// but something else forbids the move now: the wave was already started
// (a lost race), its window is closed, the canary has not completed, the
// plan has not expired yet. Like a lost race it is an answer, not a
// failure: it wraps store.ErrConflict.
type RefusedError struct {
	ID     string
	Verb   string
	Reason string
	Until  time.Time // when it may be allowed, if known
}

// Error describes the refusal.
func (e *RefusedError) Error() string {
	return fmt.Sprintf("%s request %s: %s", e.Verb, e.ID, e.Reason)
}

// Unwrap returns store.ErrConflict.
func (e *RefusedError) Unwrap() error { return store.ErrConflict }

// mutation changes a request and its rollout inside a swap, at now; an
// error refuses the swap and nothing is written.
type mutation func(x *store.Request, ro *Rollout, now time.Time) error

// apply runs m on x and stores the rollout it changed. Every change the
// engine makes this way also makes the request due at once (wake), so the
// next housekeeping tick looks at what it may do now.
func (l *Lifecycle) apply(x *store.Request, m mutation) error {
	now := l.now()
	if m != nil {
		ro, err := RolloutOf(*x)
		if err != nil {
			return err
		}
		if err := m(x, &ro, now); err != nil {
			return err
		}
		if err := setRollout(x, ro); err != nil {
			return err
		}
	}
	wake(x, now)
	return nil
}

// move is the one way a verb changes a request's state: checked against
// the table, then one compare-and-swap that also applies m.
func (l *Lifecycle) move(ctx context.Context, verb, id string, from []store.State, to store.State, user string, m mutation) (store.Request, error) {
	for _, f := range from {
		if !Allowed(f, to) {
			return store.Request{}, &IllegalMoveError{ID: id, From: from, To: to}
		}
	}
	r, err := l.st.TransitionIf(ctx, id, from, to, user, func(x *store.Request) error { return l.apply(x, m) })
	if err != nil {
		return store.Request{}, fmt.Errorf("%s request %s: %w", verb, id, err)
	}
	return r, nil
}

// update changes a request without changing its state, atomically.
func (l *Lifecycle) update(ctx context.Context, verb, id string, m mutation) (store.Request, error) {
	r, err := l.st.Update(ctx, id, func(x *store.Request) error { return l.apply(x, m) })
	if err != nil {
		return store.Request{}, fmt.Errorf("%s request %s: %w", verb, id, err)
	}
	return r, nil
}

// Create stores a new request for plan p, in state planned, with the
// waves its options give (see Waves) at the Lifecycle's now; r carries who
// asked, where, and until when the plan may be confirmed (ExpiresAt). It
// fails if opts are invalid or there is nothing to send.
func (l *Lifecycle) Create(ctx context.Context, r store.Request, p upgrade.Plan, opts Options) (store.Request, error) {
	if err := opts.Validate(); err != nil {
		return store.Request{}, fmt.Errorf("create request %s: %w", r.ID, err)
	}
	now := l.now()
	ro := Rollout{Options: opts, Waves: Waves(p, opts, now)}
	if len(ro.Waves) == 0 {
		return store.Request{}, fmt.Errorf("create request %s: the plan has no instance to patch", r.ID)
	}
	raw, err := json.Marshal(p)
	if err != nil {
		return store.Request{}, fmt.Errorf("create request %s: encode plan: %w", r.ID, err)
	}
	r.State, r.Plan, r.Force = store.Planned, raw, p.Force
	if err := setRollout(&r, ro); err != nil {
		return store.Request{}, err
	}
	if r.CreatedAt.IsZero() {
		r.CreatedAt = now
	}
	if r.UpdatedAt.IsZero() {
		r.UpdatedAt = r.CreatedAt
	}
	if err := l.st.Create(ctx, r); err != nil {
		return store.Request{}, fmt.Errorf("create request %s: %w", r.ID, err)
	}
	return r, nil
}

// RequestApproval moves a planned request to awaiting approval: the
// requester confirmed and an approver must decide. A plan past ExpiresAt
// gets a *store.ExpiredError.
func (l *Lifecycle) RequestApproval(ctx context.Context, id, user string) (store.Request, error) {
	return l.move(ctx, "request approval of", id, []store.State{store.Planned}, store.AwaitingApproval, user, func(x *store.Request, _ *Rollout, now time.Time) error {
		return withinTTL(x, now)
	})
}

// withinTTL refuses, inside a swap, to move a plan on (to awaiting
// approval or submitting) once its ExpiresAt has passed: the TTL is part
// of the swap, and this package (not the store) decides where it applies.
func withinTTL(x *store.Request, now time.Time) error {
	if !x.ExpiresAt.IsZero() && !now.Before(x.ExpiresAt) {
		return &store.ExpiredError{ID: x.ID, ExpiresAt: x.ExpiresAt}
	}
	return nil
}

// Reopen moves a request awaiting approval back to planned, when the
// approval request could not be shown to anyone.
func (l *Lifecycle) Reopen(ctx context.Context, id, user string) (store.Request, error) {
	return l.move(ctx, "reopen", id, []store.State{store.AwaitingApproval}, store.Planned, user, nil)
}

// Cancel ends a request not yet confirmed (planned or awaiting approval):
// nothing is sent.
func (l *Lifecycle) Cancel(ctx context.Context, id, user string) (store.Request, error) {
	return l.move(ctx, "cancel", id, []store.State{store.Planned, store.AwaitingApproval}, store.Cancelled, user, nil)
}

// Reject ends a request awaiting approval, recording the approver who
// rejected it: nothing is sent.
func (l *Lifecycle) Reject(ctx context.Context, id, approver string) (store.Request, error) {
	return l.move(ctx, "reject", id, []store.State{store.AwaitingApproval}, store.Rejected, approver, func(x *store.Request, _ *Rollout, _ time.Time) error {
		x.Approver = approver
		return nil
	})
}

// Expire ends an open request (planned, awaiting approval, or approved by
// an older version) whose ExpiresAt has passed; before that it is refused
// with a *RefusedError.
func (l *Lifecycle) Expire(ctx context.Context, id, user string) (store.Request, error) {
	from := []store.State{store.Planned, store.AwaitingApproval, store.Approved}
	return l.move(ctx, "expire", id, from, store.Expired, user, func(x *store.Request, _ *Rollout, now time.Time) error {
		if x.ExpiresAt.IsZero() || now.Before(x.ExpiresAt) {
			return &RefusedError{ID: id, Verb: "expire", Reason: "the plan has not expired", Until: x.ExpiresAt}
		}
		return nil
	})
}

// Confirm is the requester's Confirm when no approval is needed: planned →
// submitting, in one swap that also claims the submission for the caller
// and starts the first wave that may go now (its window open; a canary
// wave first). The returned Send says which (Wave -1: none yet, e.g. every
// window is closed; its waves go later, see Next). Only the winner gets a
// Send: a lost race is a *store.ConflictError, an expired plan a
// *store.ExpiredError.
func (l *Lifecycle) Confirm(ctx context.Context, id, user string) (store.Request, *Send, error) {
	return l.start(ctx, "confirm", id, store.Planned, user, nil)
}

// Approve is an approver's Approve: awaiting approval → submitting, as
// Confirm, recording the approver.
func (l *Lifecycle) Approve(ctx context.Context, id, approver string) (store.Request, *Send, error) {
	return l.start(ctx, "approve", id, store.AwaitingApproval, approver, func(x *store.Request) { x.Approver = approver })
}

// start moves a request from from to submitting for Confirm and Approve.
func (l *Lifecycle) start(ctx context.Context, verb, id string, from store.State, user string, also func(*store.Request)) (store.Request, *Send, error) {
	s := &Send{RequestID: id, Wave: -1}
	r, err := l.claimMove(ctx, verb, id, []store.State{from}, user, s, func(x *store.Request, ro *Rollout, now time.Time) error {
		if err := withinTTL(x, now); err != nil {
			return err
		}
		if also != nil {
			also(x)
		}
		v := judge(*ro, nil)
		s.Wave = -1
		for k := range ro.Waves {
			if ok, _, _ := due(*ro, k, v, now); ok {
				s.Wave = k
				break
			}
		}
		l.claimSend(s, x, ro, user, now)
		return nil
	})
	if err != nil {
		return store.Request{}, nil, err
	}
	return r, s.withBatches(r), nil
}

// SendWave claims the sending of wave k of a submitted request for the
// caller: submitted → submitting, in one swap that checks that wave k was
// never started, that its window is open now, that the previous wave's
// answers are all posted (ResultsPending is false) and, for a wave that is
// not a canary, that every canary instance Completed (or someone chose to
// continue). Of any number of callers, at most one ever gets wave k; the
// others get a *RefusedError (or a *store.ConflictError if the request is
// not submitted: being sent, paused, stopped, done). user is who set it
// going ("" for the bot on its own).
func (l *Lifecycle) SendWave(ctx context.Context, id string, k int, user string) (store.Request, *Send, error) {
	jobs, err := l.st.Jobs(ctx, id)
	if err != nil {
		return store.Request{}, nil, fmt.Errorf("send wave %d of request %s: %w", k, id, err)
	}
	// The canary's verdict comes from jobs read before the swap; that is
	// safe because it only ever goes from pending to passed or bad (a job
	// that Completed stays so, and a canary job missing from an early read
	// only makes it pending or bad), never back.
	s := &Send{RequestID: id, Wave: k}
	verb := fmt.Sprintf("send wave %d of", k)
	r, err := l.claimMove(ctx, verb, id, []store.State{store.Submitted}, user, s, func(x *store.Request, ro *Rollout, now time.Time) error {
		refuse := func(reason string, until time.Time) error {
			return &RefusedError{ID: id, Verb: verb, Reason: reason, Until: until}
		}
		switch {
		case k < 0 || k >= len(ro.Waves):
			return refuse(fmt.Sprintf("it has no wave %d", k), time.Time{})
		case !ro.Waves[k].Started.IsZero():
			return refuse(fmt.Sprintf("wave %d was already started at %s", k, ro.Waves[k].Started.UTC().Format(time.RFC3339)), time.Time{})
		case x.ResultsPending:
			return refuse("the answers of the previous wave are not all posted yet", time.Time{})
		}
		if ok, why, until := due(*ro, k, judge(*ro, jobs), now); !ok {
			return refuse(why, until)
		}
		l.claimSend(s, x, ro, user, now)
		return nil
	})
	if err != nil {
		return store.Request{}, nil, err
	}
	return r, s.withBatches(r), nil
}

// Pause stops a submitted request from sending more because its canary
// went wrong (a canary job Failed, was given up, or never started) or, for
// a rollout in waves, more instances went wrong than its error budget
// allows: no wave goes until Continue, and Stop ends it. It checks the
// jobs itself, and is refused (*RefusedError) when neither happened,
// nothing is left to send, or someone already chose to continue past it.
func (l *Lifecycle) Pause(ctx context.Context, id string) (store.Request, error) {
	jobs, err := l.st.Jobs(ctx, id)
	if err != nil {
		return store.Request{}, fmt.Errorf("pause request %s: %w", id, err)
	}
	return l.move(ctx, "pause", id, []store.State{store.Submitted}, store.Paused, "", func(x *store.Request, ro *Rollout, now time.Time) error {
		pause, why, bad := judge(*ro, jobs).pause(*ro)
		switch {
		case !pause:
			return &RefusedError{ID: id, Verb: "pause", Reason: "neither its canary nor its error budget went wrong"}
		case !ro.waiting():
			return &RefusedError{ID: id, Verb: "pause", Reason: "nothing is left to send"}
		}
		ro.Paused = &Mark{At: now, Why: why, Instances: bad}
		return nil
	})
}

// Continue resumes a paused request (paused → submitted): the rest is sent
// (each wave still exactly once, when due; see Next and SendWave) without
// waiting for the canary any more, and the instances that made it pause
// are accepted: they no longer count against the error budget, which
// pauses the request again only for errors after them. A second Continue
// gets a *store.ConflictError.
func (l *Lifecycle) Continue(ctx context.Context, id, user string) (store.Request, error) {
	return l.move(ctx, "continue", id, []store.State{store.Paused}, store.Submitted, user, func(_ *store.Request, ro *Rollout, now time.Time) error {
		ro.Continued = &Mark{At: now, By: user}
		if ro.Paused != nil {
			for _, id := range ro.Paused.Instances {
				if !slices.Contains(ro.Accepted, id) {
					ro.Accepted = append(ro.Accepted, id)
				}
			}
		}
		return nil
	})
}

// errBusy makes Stop try again: the request left submitting meanwhile.
var errBusy = errors.New("request moved while stopping it")

// Stop ends a request that is sending (submitted or paused → stopped): no
// wave is started after it. When a wave is being sent (submitting), the
// stop is recorded at once and the wave's sender sends no further batch
// (BeginBatch gets ErrStopped); its EndSend (or Recover's) then moves the
// request to stopped: the returned request is then still submitting, with
// RolloutOf(r).Stopped set. A request already stopped or done gets a
// *store.ConflictError; a stop already requested a *RefusedError. Jobs
// already started are still followed; the final summary is still owed
// (Next says Finish).
func (l *Lifecycle) Stop(ctx context.Context, id, user string) (store.Request, error) {
	mark := func(_ *store.Request, ro *Rollout, now time.Time) error {
		if ro.Stopped != nil {
			return &RefusedError{ID: id, Verb: "stop", Reason: "a stop was already requested"}
		}
		ro.Stopped = &Mark{At: now, By: user}
		return nil
	}
	for range 10 {
		r, err := l.move(ctx, "stop", id, []store.State{store.Submitted, store.Paused}, store.Stopped, user, mark)
		if ce, ok := errors.AsType[*store.ConflictError](err); !ok || ce.Got != store.Submitting {
			return r, err
		}
		r, err = l.update(ctx, "stop", id, func(x *store.Request, ro *Rollout, now time.Time) error {
			if x.State != store.Submitting {
				return errBusy
			}
			return mark(x, ro, now)
		})
		if !errors.Is(err, errBusy) {
			return r, err
		}
	}
	return store.Request{}, fmt.Errorf("stop request %s: it kept moving between submitted and submitting", id)
}

// Finish records that a request's final summary is out: submitted → done
// once every wave was sent and ended, its answers posted and every job
// ended; or, for a stopped request, the same mark without a move (stopped
// is final). Exactly one caller finishes a request; the others get a
// *store.ConflictError or a *RefusedError. Hold the report claim while
// posting the summary, and call Finish after it.
func (l *Lifecycle) Finish(ctx context.Context, id string) (store.Request, error) {
	jobs, err := l.st.Jobs(ctx, id)
	if err != nil {
		return store.Request{}, fmt.Errorf("finish request %s: %w", id, err)
	}
	finish := func(x *store.Request, ro *Rollout, now time.Time) error {
		refuse := func(reason string) error { return &RefusedError{ID: id, Verb: "finish", Reason: reason} }
		switch {
		case ro.Finished != nil:
			return refuse("it was already finished")
		case !allEnded(jobs):
			return refuse("some of its jobs have not ended")
		case x.ResultsPending:
			return refuse("its batch answers are not all posted")
		case ro.Sending() >= 0:
			return refuse("a wave is being sent")
		case x.State == store.Submitted && slices.ContainsFunc(ro.Waves, func(w Wave) bool { return w.Ended.IsZero() }):
			return refuse("some waves are not sent yet")
		}
		ro.Finished = &Mark{At: now}
		return nil
	}
	r, err := l.move(ctx, "finish", id, []store.State{store.Submitted}, store.Done, "", finish)
	if ce, ok := errors.AsType[*store.ConflictError](err); ok && ce.Got == store.Stopped {
		return l.update(ctx, "finish", id, func(x *store.Request, ro *Rollout, now time.Time) error {
			if x.State != store.Stopped {
				return &store.ConflictError{ID: id, Want: []store.State{store.Stopped}, Got: x.State}
			}
			return finish(x, ro, now)
		})
	}
	return r, err
}

// allEnded reports whether every job has been reported or given up.
func allEnded(jobs []store.Job) bool {
	return !slices.ContainsFunc(jobs, store.Job.Active)
}
