package patch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// The Runner's defaults, the one place they are set.
const (
	DefaultPollInterval    = 30 * time.Second
	DefaultFollowFor       = 6 * time.Hour
	DefaultBatchTimeout    = 25 * time.Second
	DefaultPollConcurrency = 32
)

// writeTimeout bounds what the engine says (and records) after a decision
// or a poll, which must finish even while the process shuts down.
const writeTimeout = 30 * time.Second

// reportClaim is how long a process may take to post a request's thread
// report (batch answers, final summary) before another may try.
const reportClaim = 2 * time.Minute

// RunnerOptions are what a Runner is made of. Store, Fleet and Reporter are
// required; the rest has defaults.
type RunnerOptions struct {
	Store    Engine
	Fleet    Fleet
	Reporter Reporter
	Metrics  Metrics // nil: nothing counted
	Log      zerolog.Logger
	// Now is the clock (the store's); nil means time.Now.
	Now func() time.Time
	// PollInterval is how often housekeeping runs and jobs are read.
	PollInterval time.Duration
	// FollowFor is how long a job is followed before the engine gives up.
	FollowFor time.Duration
	// BatchTimeout bounds one batch call; keep it below the shutdown timeout.
	BatchTimeout time.Duration
	// PollConcurrency is how many job reads are in flight at once.
	PollConcurrency int
	// Retention: final requests older than this are deleted; 0 keeps them.
	Retention time.Duration
	// Explain turns a cloud error into a sentence for people, for the
	// answers of instances a re-check could not look up; nil: err.Error().
	Explain func(err error, requestID string) string
}

// withDefaults fills in what o leaves unset.
func (o RunnerOptions) withDefaults() RunnerOptions {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.FollowFor <= 0 {
		o.FollowFor = DefaultFollowFor
	}
	if o.BatchTimeout <= 0 {
		o.BatchTimeout = DefaultBatchTimeout
	}
	if o.PollConcurrency <= 0 {
		o.PollConcurrency = DefaultPollConcurrency
	}
	if o.Metrics == nil {
		o.Metrics = noMetrics{}
	}
	if o.Explain == nil {
		o.Explain = func(err error, _ string) string { return err.Error() }
	}
	return o
}

// noMetrics counts nothing.
type noMetrics struct{}

func (noMetrics) BatchCalled(string, string) {}
func (noMetrics) JobEnded(string, string)    {}

// Runner is the engine: it carries a person's decision out (the verbs),
// sends waves, follows jobs and does what is due for every request, and
// says what happened through its Reporter. It is safe for concurrent use,
// and several Runners (replicas) may share one store.
type Runner struct {
	opts RunnerOptions
	st   Engine
	life *Lifecycle
	rep  Reporter
	log  zerolog.Logger

	base       atomic.Pointer[context.Context] // Follow's: its end stops new batches
	inflight   sync.WaitGroup
	busy       atomic.Int64 // sends in flight
	houseTicks atomic.Int64
	swept      atomic.Bool           // the first Tick listed every open request
	sites      map[string]*siteState // by Site.Name
}

// siteState is what the Runner keeps per target, so that one target's
// throttling or slow answers never hold up another's jobs.
type siteState struct {
	pollPause atomic.Pointer[time.Time] // no job is read before this (it said 429)
	pollTicks atomic.Int64
}

// NewRunner returns a Runner made of opts.
func NewRunner(opts RunnerOptions) *Runner {
	opts = opts.withDefaults()
	rn := &Runner{opts: opts, st: opts.Store, rep: opts.Reporter, log: opts.Log, sites: map[string]*siteState{}}
	rn.life = New(opts.Store, opts.Now, rn.Lease())
	for _, s := range opts.Fleet.Sites() {
		rn.sites[s.Name] = &siteState{}
	}
	return rn
}

// Lease is how long a wave's submission claim lasts unrenewed: one batch
// call and the writes around it.
func (rn *Runner) Lease() time.Duration { return rn.opts.BatchTimeout + time.Minute }

// Lifecycle is the Runner's Lifecycle, for tests and tools that move a
// request by hand.
func (rn *Runner) Lifecycle() *Lifecycle { return rn.life }

// Busy is how many waves are being sent now.
func (rn *Runner) Busy() int64 { return rn.busy.Load() }

// Ticks is how many rounds of following have finished: the least of the
// housekeeping ticks and every target's poll ticks.
func (rn *Runner) Ticks() int64 {
	n := rn.houseTicks.Load()
	for _, s := range rn.sites {
		n = min(n, s.pollTicks.Load())
	}
	return n
}

// Wait waits for the waves being sent to end (their batch calls are never
// abandoned half-recorded).
func (rn *Runner) Wait() { rn.inflight.Wait() }

// ErrReported means the verb could not finish and the Reporter has
// already told the person why: nothing more to say.
var ErrReported = errors.New("already reported")

// ErrNothingToRetry means Retry found every instance patched.
var ErrNothingToRetry = errors.New("every instance was patched")

// ErrNotFinal means Retry was asked of a request that is not final yet
// (still being sent, followed or decided): its instances are still its own.
var ErrNotFinal = errors.New("the request is not final yet")

// Create stores a new request for plan p (see Lifecycle.Create).
func (rn *Runner) Create(ctx context.Context, r store.Request, p upgrade.Plan, opts Options) (store.Request, error) {
	return rn.life.Create(ctx, r, p, opts)
}

// Confirm is the requester's Confirm of planned request id: when its
// target has approvers, it asks them (AskApproval; the request awaits
// approval); otherwise the first wave that may go is sent, exactly once,
// in the background. reply is where to answer the requester.
func (rn *Runner) Confirm(ctx context.Context, id, user, reply string) (store.Request, error) {
	r, err := rn.st.Get(ctx, id)
	if err != nil {
		return store.Request{}, fmt.Errorf("confirm request %s: %w", id, err)
	}
	if site, _ := rn.opts.Fleet.SiteOf(r); len(site.Approvers) > 0 {
		return rn.askApproval(ctx, id, user, reply)
	}
	won, s, err := rn.life.Confirm(ctx, id, user)
	if err != nil {
		return store.Request{}, err
	}
	rn.rep.Decided(ctx, Decision{Verb: VerbConfirm, Request: won, By: user, Reply: reply})
	rn.goSend(ctx, won, s, reply)
	return won, nil
}

// askApproval moves planned request id to awaiting approval and asks the
// approvers; when they cannot be asked it goes back to planned.
func (rn *Runner) askApproval(ctx context.Context, id, user, reply string) (store.Request, error) {
	won, err := rn.life.RequestApproval(ctx, id, user)
	if err != nil {
		if errors.Is(err, store.ErrConflict) {
			return store.Request{}, err
		}
		// A store failure: the swap may have happened after all.
		cur, gerr := rn.st.Get(ctx, id)
		if gerr != nil || cur.State != store.AwaitingApproval || cur.ApprovalTS != "" || !LastBy(cur, user) {
			return store.Request{}, err
		}
		rn.log.Warn().Err(err).Str("request_id", id).Msg("the decision was recorded after all; going on")
		won = cur
	}
	ts, err := rn.rep.AskApproval(ctx, won)
	if err != nil {
		rn.log.Error().Err(err).Str("request_id", id).Msg("post approval request")
		if back, rerr := rn.life.Reopen(ctx, id, user); rerr != nil {
			// Safe: nobody was asked, so nobody can approve it, and it
			// expires with its TTL.
			rn.log.Error().Err(rerr).Str("request_id", id).Msg("return the plan to planned")
		} else {
			won = back
		}
		rn.rep.Decided(ctx, Decision{Verb: VerbConfirm, Request: won, By: user, Reply: reply, Err: err})
		return won, ErrReported
	}
	if won, err = rn.life.Note(ctx, id, func(x *store.Request) { x.ApprovalTS = ts }); err != nil {
		rn.log.Error().Err(err).Str("request_id", id).Msg("store approval message ts")
		won.ApprovalTS = ts
	}
	rn.rep.Decided(ctx, Decision{Verb: VerbConfirm, Request: won, By: user, Reply: reply})
	return won, nil
}

// Approve is an approver's Approve of request id (awaiting approval): the
// first wave that may go is sent, exactly once, in the background.
func (rn *Runner) Approve(ctx context.Context, id, user string) (store.Request, error) {
	won, s, err := rn.life.Approve(ctx, id, user)
	if err != nil {
		return store.Request{}, err
	}
	rn.rep.Decided(ctx, Decision{Verb: VerbApprove, Request: won, By: user, Reply: won.ResponseURL})
	rn.goSend(ctx, won, s, won.ResponseURL)
	return won, nil
}

// Reject is an approver's Reject: nothing is sent.
func (rn *Runner) Reject(ctx context.Context, id, user string) (store.Request, error) {
	r, err := rn.life.Reject(ctx, id, user)
	if err != nil {
		return store.Request{}, err
	}
	rn.rep.Decided(ctx, Decision{Verb: VerbReject, Request: r, By: user, Reply: r.ResponseURL})
	return r, nil
}

// Cancel is the requester's Cancel of a plan not yet confirmed (or
// awaiting approval): nothing is sent. reply is where to answer them.
func (rn *Runner) Cancel(ctx context.Context, id, user, reply string) (store.Request, error) {
	r, err := rn.life.Cancel(ctx, id, user)
	if err != nil {
		return store.Request{}, err
	}
	rn.rep.Decided(ctx, Decision{Verb: VerbCancel, Request: r, By: user, Reply: reply})
	return r, nil
}

// Retire cancels a plan whose instances changed since it was shown, on a
// click that found it so; the caller shows a fresh plan (nothing is said
// through the Reporter).
func (rn *Runner) Retire(ctx context.Context, id, user string) (store.Request, error) {
	return rn.life.Cancel(ctx, id, user)
}

// Expire ends a plan a click found past its TTL; the caller says so.
func (rn *Runner) Expire(ctx context.Context, id, user string) (store.Request, error) {
	return rn.life.Expire(ctx, id, user)
}

// Continue resumes a paused request: the rest is sent, each wave exactly
// once when due, without waiting for the canary any more.
func (rn *Runner) Continue(ctx context.Context, id, user string) (store.Request, error) {
	r, err := rn.life.Continue(ctx, id, user)
	if err != nil {
		return store.Request{}, err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	rn.rep.Decided(ctx, Decision{Verb: VerbContinue, Request: r, By: user})
	rn.refresh(ctx, r.ID)
	return r, nil
}

// Stop ends a request that is sending: nothing more is sent; a batch call
// in flight finishes, jobs already started are still followed.
func (rn *Runner) Stop(ctx context.Context, id, user string) (store.Request, error) {
	r, err := rn.life.Stop(ctx, id, user)
	if err != nil {
		return store.Request{}, err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	rn.rep.Decided(ctx, Decision{Verb: VerbStop, Request: r, By: user})
	rn.refresh(ctx, r.ID)
	return r, nil
}

// Retry returns the instances of request id that were not patched, for a
// fresh plan (a new request) of just those; ErrNothingToRetry when there
// are none, ErrNotFinal when id is not final yet. A person retrying has
// checked the instances: the locks id still holds on instances without a
// running job (unknown outcomes) are released, so the fresh plan can
// take them.
func (rn *Runner) Retry(ctx context.Context, id string) ([]string, error) {
	r, err := rn.st.Get(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("retry request %s: %w", id, err)
	}
	jobs, err := rn.st.Jobs(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("retry request %s: read jobs: %w", id, err)
	}
	if !r.State.Final() && !ended(r, jobs) {
		return nil, fmt.Errorf("retry request %s (%s): %w", id, r.State, ErrNotFinal)
	}
	ids, err := NotPatched(r, jobs)
	if err != nil || len(ids) == 0 {
		return nil, ErrNothingToRetry
	}
	var free []string
	for _, iid := range ids {
		if !slices.ContainsFunc(jobs, func(j store.Job) bool { return j.InstanceID == iid && j.Active() }) {
			free = append(free, iid)
		}
	}
	if err := rn.st.Unlock(ctx, id, LockKeys(r.Target, free)); err != nil {
		return nil, fmt.Errorf("retry request %s: %w", id, err)
	}
	return ids, nil
}

// ended tells whether submitted request r has nothing left to do but be
// marked finished: every wave sent and ended, its answers posted, every
// job ended (its summary, which offers Retry, may be out already).
func ended(r store.Request, jobs []store.Job) bool {
	ro, err := RolloutOf(r)
	return err == nil && r.State == store.Submitted && !r.ResultsPending && allEnded(jobs) &&
		!slices.ContainsFunc(ro.Waves, func(w Wave) bool { return w.Ended.IsZero() })
}

// MarkPosted records that the first n parts of report key (e.g.
// "results", "summary") of request id are out, so a later try posts only
// the rest.
func (rn *Runner) MarkPosted(ctx context.Context, id, key string, n int) error {
	_, err := rn.life.Note(ctx, id, func(x *store.Request) {
		if x.Posted == nil {
			x.Posted = map[string]int{}
		}
		x.Posted[key] = n
	})
	return err
}

// refresh shows request id as it is now and does what is due for it (the
// next wave, a pause, the summary).
func (rn *Runner) refresh(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	r, err := rn.st.Get(ctx, id)
	if err != nil {
		return
	}
	rn.rep.Refresh(ctx, r)
	rn.advance(ctx, r)
}

// LastBy tells whether user made r's last state change.
func LastBy(r store.Request, user string) bool {
	return len(r.History) > 0 && r.History[len(r.History)-1].User == user
}

// safely runs task, turning a panic into a log line so that one bad
// request cannot take the process down.
func (rn *Runner) safely(task func()) {
	defer func() {
		if r := recover(); r != nil {
			rn.log.Error().Interface("panic", r).Msg("engine task panicked")
		}
	}()
	task()
}
