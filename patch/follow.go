package patch

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// openStates are the states whose requests Tick looks at: those that may
// still expire, send, be taken over, pause or owe a summary. Stopped is
// final, but a stopped request owes its summary.
var openStates = []store.State{store.Planned, store.AwaitingApproval, store.Approved, store.Submitting, store.Submitted, store.Stopped}

// Follow runs Tick (housekeeping) and Poll of each target, each on its own
// ticker every PollInterval, until ctx ends, so housekeeping never waits
// behind a slow poll and one target's slow or failing API never delays
// another's jobs. The end of ctx also stops the waves being sent from
// sending further batches. Jobs live in the store, so a restarted process
// picks them up where the previous one stopped.
func (rn *Runner) Follow(ctx context.Context) {
	rn.base.Store(&ctx)
	var wg sync.WaitGroup
	wg.Go(func() { rn.every(ctx, func() { rn.Tick(ctx) }, &rn.houseTicks) })
	for _, s := range rn.opts.Fleet.Sites() {
		st := rn.site(s.Name)
		wg.Go(func() { rn.every(ctx, func() { rn.Poll(ctx, s.Name) }, &st.pollTicks) })
	}
	wg.Wait()
}

// site is the run-time state of the target named name.
func (rn *Runner) site(name string) *siteState {
	if s, ok := rn.sites[name]; ok {
		return s
	}
	return &siteState{} // not configured at NewRunner: nothing kept
}

// every runs fn now and then every PollInterval until ctx ends, counting
// the runs in ticks.
func (rn *Runner) every(ctx context.Context, fn func(), ticks *atomic.Int64) {
	t := time.NewTicker(rn.opts.PollInterval)
	defer t.Stop()
	for {
		fn()
		ticks.Add(1)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Tick does what is due for every open request (Next): expire a plan past
// its TTL, take over a stalled wave, send a wave whose time has come, pause
// on a failed canary, post what a request owes its thread; then it deletes
// final requests older than the retention.
func (rn *Runner) Tick(ctx context.Context) {
	rn.advanceAll(ctx)
	rn.prune(ctx)
}

// dueBatch is the most requests one housekeeping tick reads; more that
// are due wait for the next tick.
const dueBatch = 500

// advanceAll does what is due for every request that is due (store.Due:
// its WakeAt, expiry, lease or owed answers came), reading nothing else.
// The first tick of a Runner also lists every open request once, for
// those written before WakeAt existed (and so never due by it).
func (rn *Runner) advanceAll(ctx context.Context) {
	var rs []store.Request
	var err error
	if rn.swept.CompareAndSwap(false, true) {
		rs, err = rn.st.List(ctx, openStates...)
	} else {
		rs, err = rn.st.Due(ctx, rn.opts.Now(), dueBatch)
	}
	if err != nil {
		rn.swept.Store(false) // list again next tick
		rn.log.Error().Err(err).Msg("list the requests due")
		return
	}
	for _, r := range rs {
		if ctx.Err() != nil {
			return
		}
		if r.State == store.Stopped && Finished(r) {
			// A stopped request's locks go as its last jobs end (a job
			// end wakes it); advance then puts it back to sleep.
			rn.settleFinal(ctx, r)
		}
		rn.advance(ctx, r)
	}
}

// sleep moves r's WakeAt to until (zero: until a write wakes it), so that
// store.Due no longer returns it before then, unless r changed since it
// was read (its state or WakeAt: every engine write wakes it, see wake).
func (rn *Runner) sleep(ctx context.Context, r store.Request, until time.Time) {
	if r.WakeAt.Equal(until) {
		return
	}
	_, err := rn.st.Update(ctx, r.ID, func(x *store.Request) error {
		if x.State != r.State || !x.WakeAt.Equal(r.WakeAt) {
			return errAlreadyDone // it moved: the next tick looks again
		}
		x.WakeAt = until
		return nil
	})
	if err != nil && !errors.Is(err, errAlreadyDone) {
		// Safe: it stays due and the next tick looks again.
		rn.log.Warn().Err(err).Str("request_id", r.ID).Msg("record when to look at a request next")
	}
}

// Finished tells whether a request's final summary is out.
func Finished(r store.Request) bool {
	ro, err := RolloutOf(r)
	return err == nil && ro.Finished != nil
}

// advance does what is due for request r now.
func (rn *Runner) advance(ctx context.Context, r store.Request) {
	log := rn.log.With().Str("request_id", r.ID).Logger()
	if r.State.Final() && !r.ResultsPending && (r.State != store.Stopped || Finished(r)) {
		rn.sleep(ctx, r, time.Time{}) // final: nothing is ever due again
		return
	}
	if r.ResultsPending && (r.State == store.Submitted || r.State == store.Stopped) {
		rn.repostResults(ctx, r)
		return
	}
	jobs, err := rn.st.Jobs(ctx, r.ID)
	if err != nil {
		log.Error().Err(err).Msg("read jobs")
		return
	}
	rn.settleLocks(ctx, r, jobs)
	step, err := Next(r, jobs, rn.opts.Now())
	if err != nil {
		log.Error().Err(err).Msg("decide what is due")
		return
	}
	switch step.Action {
	case ActionNone:
		rn.sleep(ctx, r, time.Time{})
	case ActionWait:
		// A wait on a person or on jobs (Until zero) is woken by the write
		// that ends it; a window opening or an expiry by its time.
		rn.sleep(ctx, r, step.Until)
	case ActionExpire:
		rn.expire(ctx, r)
	case ActionRecover:
		rn.recoverWave(ctx, r.ID)
	case ActionSend:
		won, s, err := rn.life.SendWave(ctx, r.ID, step.Wave, "")
		if err != nil {
			if !errors.Is(err, store.ErrConflict) {
				log.Error().Err(err).Int("wave", step.Wave).Msg("claim a wave")
			}
			return
		}
		log.Info().Int("wave", step.Wave).Str("why", step.Why).Msg("sending the next wave")
		rn.goSend(ctx, won, s, "")
	case ActionPause:
		rn.pause(ctx, r, step)
	case ActionFinish:
		rn.finish(ctx, r.ID)
	}
}

// expire moves a plan or approval request past its TTL to expired and has
// its messages replaced, so stale buttons do not linger.
func (rn *Runner) expire(ctx context.Context, r store.Request) {
	r2, err := rn.life.Expire(ctx, r.ID, "")
	if err != nil {
		if !errors.Is(err, store.ErrConflict) {
			rn.log.Error().Err(err).Str("request_id", r.ID).Msg("expire plan")
		}
		return // decided meanwhile
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	rn.rep.Expired(ctx, r2)
}

// pause holds a submitted request whose canary went wrong and has it said,
// with Continue and Stop.
func (rn *Runner) pause(ctx context.Context, r store.Request, step Step) {
	// The paused request is a new variable: on an error r still names the
	// request for the log (it used to be overwritten with an empty one).
	paused, err := rn.life.Pause(ctx, r.ID)
	if err != nil {
		if !errors.Is(err, store.ErrConflict) {
			rn.log.Error().Err(err).Str("request_id", r.ID).Msg("pause a request")
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	rn.rep.Paused(ctx, paused, step)
}

// repostResults posts the rest of the answers of a request's last wave,
// under the report claim so that one process posts them.
func (rn *Runner) repostResults(ctx context.Context, r store.Request) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	c, r, ok := rn.claimReport(ctx, r.ID)
	if !ok {
		return
	}
	defer rn.releaseReport(ctx, c)
	if !r.ResultsPending {
		return
	}
	_, results, err := PlanOf(r)
	if err != nil {
		rn.log.Error().Err(err).Str("request_id", r.ID).Msg("post batch answers")
		return
	}
	ro, err := RolloutOf(r)
	if err != nil {
		rn.log.Error().Err(err).Str("request_id", r.ID).Msg("post batch answers")
		return
	}
	k := len(ro.Waves) - 1
	for k > 0 && ro.Waves[k].Started.IsZero() {
		k--
	}
	if rn.postResults(ctx, r, k, waveResults(results, ro.Waves[k].Batches), nil) {
		rn.refresh(ctx, r.ID)
	}
}

// claimReport takes the report claim of request id (SlotReport): exactly
// one process posts its thread reports; a claim whose holder died runs
// out. It returns the claim and the request as read after it.
func (rn *Runner) claimReport(ctx context.Context, id string) (Claim, store.Request, bool) {
	c, err := rn.life.Claim(ctx, SlotReport, id, reportClaim)
	if err != nil {
		if !errors.Is(err, ErrHeld) {
			rn.log.Error().Err(err).Str("request_id", id).Msg("claim the thread report")
		}
		return c, store.Request{}, false
	}
	r, err := rn.st.Get(ctx, id)
	if err != nil {
		rn.log.Error().Err(err).Str("request_id", id).Msg("read the request of a thread report")
		rn.releaseReport(ctx, c)
		return c, r, false
	}
	return c, r, true
}

// releaseReport gives the report claim up so a later tick may try again.
func (rn *Runner) releaseReport(ctx context.Context, c Claim) {
	if err := rn.life.Release(ctx, c); err != nil && !errors.Is(err, ErrLost) {
		// Safe: the claim runs out after reportClaim and a later tick retries.
		rn.log.Warn().Err(err).Str("request_id", c.ID).Msg("release the thread report claim")
	}
}

// finish has the final summary of a request posted whose waves are all
// sent (or that was stopped) and whose jobs all ended, under the report
// claim, then marks it finished. If a part is not posted, a later tick
// posts the rest.
func (rn *Runner) finish(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	c, r, ok := rn.claimReport(ctx, id)
	if !ok {
		return
	}
	defer rn.releaseReport(ctx, c)
	if Finished(r) || (r.State != store.Submitted && r.State != store.Stopped) {
		return
	}
	_, results, err := PlanOf(r)
	if err != nil {
		rn.log.Error().Err(err).Str("request_id", id).Msg("final summary")
		return
	}
	jobs, err := rn.st.Jobs(ctx, id)
	if err != nil || !allEnded(jobs) {
		return
	}
	if !rn.rep.Summary(ctx, r, Summary{Jobs: jobs, After: rn.versionsAfter(ctx, r, results, jobs)}) {
		return
	}
	r, err = rn.life.Finish(ctx, id)
	if err != nil {
		// The summary is out (recorded part by part), so a retry posts
		// nothing twice; it only marks the request finished.
		rn.log.Error().Err(err).Str("request_id", id).Msg("mark request finished")
		return
	}
	rn.settleLocks(ctx, r, jobs)
	rn.rep.Finished(ctx, r, jobs)
}

// versionsAfter looks the instances that started a job (or may have) up
// again, for the summary's versions before → after.
func (rn *Runner) versionsAfter(ctx context.Context, r store.Request, results []upgrade.UpgradeResult, jobs []store.Job) map[string]upgrade.Instance {
	var ids []string
	for _, j := range jobs {
		ids = append(ids, j.InstanceID)
	}
	for _, res := range results {
		if UnknownOutcome(res) {
			ids = append(ids, res.InstanceID)
		}
	}
	after := map[string]upgrade.Instance{}
	site, ok := rn.opts.Fleet.SiteOf(r)
	if len(ids) == 0 || !ok || site.Cloud == nil {
		return after
	}
	res, err := site.Cloud.Resolve(ctx, ids)
	if err != nil {
		rn.log.Warn().Err(err).Str("request_id", r.ID).Msg("look versions up for the summary")
		return after
	}
	for _, id := range ids {
		if in, ok := res.Found[id]; ok {
			after[id] = in
		}
	}
	return after
}

// pruneBatch is how many final requests one prune step deletes; a tick
// takes at most pruneSteps of them, so a first run on a large history
// spreads the work over several ticks.
const (
	pruneBatch = 100
	pruneSteps = 10
)

// prune deletes final requests (and their jobs) older than the retention.
func (rn *Runner) prune(ctx context.Context) {
	if rn.opts.Retention <= 0 {
		return
	}
	before := rn.opts.Now().Add(-rn.opts.Retention)
	total := 0
	for range pruneSteps {
		n, err := rn.st.Prune(ctx, before, pruneBatch)
		total += n
		if err != nil {
			rn.log.Error().Err(err).Msg("delete requests older than the retention")
			break
		}
		if n < pruneBatch {
			break
		}
	}
	if total > 0 {
		rn.log.Info().Int("deleted", total).Dur("retention", rn.opts.Retention).Msg("deleted final requests older than the retention")
	}
}
