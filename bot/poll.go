package bot

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// follow runs the follower: housekeeping (taking over stalled submissions,
// expiring stale plans, posting what a request still owes its thread,
// deleting what is older than the retention) and the job polling of each
// target, each on its own ticker, so housekeeping never waits behind a slow
// poll and one target's slow or failing API never delays another's jobs.
// Jobs live in the store, so a restarted bot picks them up where the
// previous one stopped.
func (b *Bot) follow(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() {
		b.every(ctx, func() {
			b.advanceAll(ctx)
			b.prune(ctx)
		}, &b.houseTicks)
	})
	for _, tg := range b.targets.list {
		wg.Go(func() { b.every(ctx, func() { b.pollOnce(ctx, tg) }, &tg.pollTicks) })
	}
	wg.Wait()
}

// every runs fn now and then every PollInterval until ctx ends, counting
// the runs in ticks.
func (b *Bot) every(ctx context.Context, fn func(), ticks *atomic.Int64) {
	t := time.NewTicker(b.cfg.PollInterval)
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

// pruneBatch is how many final requests one prune step deletes; a tick
// takes at most pruneSteps of them, so a first run on a large history
// spreads the work over several ticks.
const (
	pruneBatch = 100
	pruneSteps = 10
)

// prune deletes final requests (and their jobs) older than the retention.
func (b *Bot) prune(ctx context.Context) {
	if b.cfg.Retention <= 0 {
		return
	}
	before := b.cfg.Now().Add(-b.cfg.Retention)
	total := 0
	for range pruneSteps {
		n, err := b.st.Prune(ctx, before, pruneBatch)
		total += n
		if err != nil {
			b.log.Error().Err(err).Msg("delete requests older than the retention")
			break
		}
		if n < pruneBatch {
			break
		}
	}
	if total > 0 {
		b.log.Info().Int("deleted", total).Dur("retention", b.cfg.Retention).Msg("deleted final requests older than the retention")
	}
}

// pollOnce reads every job of target tg that is due, at most
// PollConcurrency at once, and reports the ends of those that ended, grouped
// per request. The first target's poll also gives up following the jobs of
// a target no longer configured once they are older than FollowFor.
func (b *Bot) pollOnce(ctx context.Context, tg *target) {
	jobs, err := b.st.ActiveJobs(ctx)
	if err != nil {
		b.log.Error().Err(err).Msg("list tracked jobs")
		return
	}
	now := b.cfg.Now()
	var (
		mu    sync.Mutex
		ended = map[string][]store.Job{} // request ID → jobs whose end this poll claimed
		wg    sync.WaitGroup
		sem   = make(chan struct{}, b.cfg.PollConcurrency)
	)
	waiting := map[string]bool{} // request ID → its job IDs are not in the thread yet, or not tg's
	owner := map[string]*target{}
	for _, j := range jobs {
		if ctx.Err() != nil || tg.throttled(now) {
			break
		}
		if !b.due(j, now) {
			continue
		}
		// A job of a request still being submitted, or whose batch answers
		// are not in the thread yet, waits: its job ID goes first.
		wait, seen := waiting[j.RequestID]
		if !seen {
			r, err := b.st.Get(ctx, j.RequestID)
			owner[j.RequestID] = b.targets.of(r)
			mine := owner[j.RequestID] == tg || (owner[j.RequestID] == nil && tg == b.targets.list[0])
			wait = err != nil || r.State == store.Submitting || r.ResultsPending || !mine
			waiting[j.RequestID] = wait
		}
		if wait {
			continue
		}
		jt := owner[j.RequestID] // nil: its target is no longer configured
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if done, ok := b.pollJob(ctx, jt, j, now); ok {
				mu.Lock()
				ended[done.RequestID] = append(ended[done.RequestID], done)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for id, js := range ended {
		b.reportEnds(ctx, id, js)
		b.refreshRequest(ctx, id)
	}
}

// due tells whether a job should be read now: every PollInterval, backing
// off exponentially after read errors.
func (b *Bot) due(j store.Job, now time.Time) bool {
	if j.LastPolled.IsZero() {
		return true
	}
	wait := b.cfg.PollInterval
	for i := 0; i < min(j.PollErrors, 6); i++ {
		wait *= 2
	}
	return now.Sub(j.LastPolled) >= wait-b.cfg.PollInterval/2
}

// errNotDue aborts a poll claim: another poller (maybe another replica)
// read the job within this interval.
var errNotDue = errors.New("not due")

// pollJob reads one job under a poll claim, so that across replicas a job
// is read at most once per interval, and records what changed. It returns
// the job and true when the job ended (or was given up) and this poll
// claimed the report of its end.
//
// The job is read with its target tg's client; with tg nil (a target no
// longer configured) it is only given up once it is too old.
func (b *Bot) pollJob(ctx context.Context, tg *target, j store.Job, now time.Time) (store.Job, bool) {
	log := b.log.With().Str("request_id", j.RequestID).Str("job_id", j.ID).Str("instance_id", j.InstanceID).Logger()
	if now.Sub(j.SubmittedAt) > b.cfg.FollowFor {
		j2, err := b.st.UpdateJob(ctx, j.ID, func(x *store.Job) error {
			if !x.Active() {
				return errAlreadyDone
			}
			x.GaveUp = true
			return nil
		})
		if err != nil {
			b.logJobWrite(log, err, "give up following a job")
			return j, false
		}
		b.metrics.Jobs.WithLabelValues(tg.metricName(), "unfollowed").Inc()
		return j2, true
	}
	if tg == nil {
		return j, false
	}
	// The poll claim: the read's time, written before the read.
	claimed, err := b.st.UpdateJob(ctx, j.ID, func(x *store.Job) error {
		if !x.Active() || !b.due(*x, now) {
			return errNotDue
		}
		x.LastPolled = now
		return nil
	})
	if err != nil {
		b.logJobWrite(log, err, "claim a job's poll")
		return j, false
	}
	job, err := tg.DB.Job(ctx, j.ID)
	if err != nil {
		if ctx.Err() != nil {
			return j, false
		}
		b.noteThrottle(tg, err, now)
		log.Warn().Err(err).Int("poll_errors", claimed.PollErrors+1).Msg("read job failed; backing off")
		if _, err := b.st.UpdateJob(ctx, j.ID, func(x *store.Job) error { x.PollErrors++; return nil }); err != nil {
			// Safe: the job is read again next interval, without the backoff.
			log.Warn().Err(err).Msg("record the failed read")
		}
		return j, false
	}
	if !changed(claimed, job) {
		return j, false // nothing new: no write
	}
	// Record the read and, when the job ended, claim the report of its
	// end in the same write: exactly one poller reports it.
	j2, err := b.st.UpdateJob(ctx, j.ID, func(x *store.Job) error {
		if x.Reported {
			return errAlreadyDone
		}
		x.Status, x.Progress, x.FailReason = job.Status, job.Progress, job.FailReason
		x.Started, x.Ended = job.Started, job.Ended
		if x.InstanceName == "" {
			x.InstanceName = job.InstanceName
		}
		x.PollErrors = 0
		x.Reported = job.Finished()
		return nil
	})
	if err != nil || !job.Finished() {
		b.logJobWrite(log, err, "record a job's status")
		return j, false
	}
	b.metrics.Jobs.WithLabelValues(tg.Name, job.Status).Inc()
	return j2, true
}

// changed tells whether a read of the job says anything the store does not
// have yet.
func changed(j store.Job, now upgrade.Job) bool {
	return j.Status != now.Status || j.Progress != now.Progress || j.FailReason != now.FailReason ||
		!j.Started.Equal(now.Started) || !j.Ended.Equal(now.Ended) || j.PollErrors != 0 || now.Finished()
}

// logJobWrite logs a failed job write, unless it only lost to another
// poller (which is how the claims are meant to work).
func (b *Bot) logJobWrite(log zerolog.Logger, err error, what string) {
	if err == nil || errors.Is(err, errAlreadyDone) || errors.Is(err, errNotDue) {
		return
	}
	log.Error().Err(err).Msg(what)
}

// noteThrottle pauses every poll of target tg when its GeminiDB answered
// 429: the bot backs off together instead of each read retrying on its
// own. Other targets' polls go on.
func (b *Bot) noteThrottle(tg *target, err error, now time.Time) {
	var ae *upgrade.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusTooManyRequests {
		return
	}
	until := now.Add(b.cfg.PollInterval)
	tg.pollPause.Store(&until)
	b.log.Warn().Str("target", tg.Name).Time("until", until).Msg("GeminiDB asks the bot to slow down (429); job polling of this target pauses")
}

// reportEnds posts the ends of jobs (whose reports this poll claimed) in
// their request's thread, failures first, in as few replies as Slack's
// limits allow. The claims of the jobs whose reply did not go out are
// released, so the next poll tries again.
func (b *Bot) reportEnds(ctx context.Context, requestID string, jobs []store.Job) {
	// A shutdown must not cut a reply short after Slack got it: that would
	// release the claim and the next process would post it again.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), slackWriteTimeout)
	defer cancel()
	log := b.log.With().Str("request_id", requestID).Logger()
	r, err := b.st.Get(ctx, requestID)
	if err != nil {
		log.Error().Err(err).Msg("read the request of ended jobs")
		b.unclaimReports(ctx, log, jobs)
		return
	}
	slices.SortStableFunc(jobs, func(x, y store.Job) int { return endRank(x) - endRank(y) })
	for _, j := range jobs {
		b.audit("job_finished", requestAudit(r, r.Requester, []string{j.InstanceID}),
			"job_id", j.ID, "status", j.Status, "fail_reason", j.FailReason, "gave_up", j.GaveUp)
	}
	// One reply per group of jobs (failures first, completions as a compact
	// list): a group Slack refuses is released with the groups after it,
	// and the next poll reports those again; none is reported twice.
	now := b.cfg.Now()
	for i := 0; i < len(jobs); i += jobsPerReply {
		group := jobs[i:min(i+jobsPerReply, len(jobs))]
		for _, part := range b.kitOf(b.targets.of(r)).jobEndsBlocks(group, now) {
			part = withTarget(part, b.targets.labelOf(r))
			if !b.postThread(ctx, r.Channel, r.ParentTS, fmt.Sprintf("%s ended", plural(len(group), "job")), part) {
				b.unclaimReports(ctx, log, jobs[i:])
				return
			}
		}
	}
}

// jobsPerReply is how many job ends one thread reply reports at most: 100
// instances that end in one poll read in 5 replies.
const jobsPerReply = 20

// endRank orders job ends for a grouped reply: failures, then jobs no
// longer followed, then completions.
func endRank(j store.Job) int {
	switch {
	case j.Status == upgrade.JobFailed:
		return 0
	case j.Status != upgrade.JobCompleted:
		return 1
	default:
		return 2
	}
}

// unclaimReports releases the report claims of jobs whose reply Slack
// refused, so the next poll reports them again.
func (b *Bot) unclaimReports(ctx context.Context, log zerolog.Logger, jobs []store.Job) {
	for _, j := range jobs {
		if _, err := b.st.UpdateJob(ctx, j.ID, func(x *store.Job) error {
			if x.Reported {
				x.Reported = false
			} else {
				x.GaveUp = false // given up this poll: the next gives up again, and reports it
			}
			return nil
		}); err != nil {
			// The job stays claimed as reported: its reply is lost, but its
			// end is still in the counts, the final summary and status.
			log.Error().Err(err).Str("job_id", j.ID).Msg("release the report claim of a job whose reply Slack refused; its end is shown only in the summary")
		}
	}
}
