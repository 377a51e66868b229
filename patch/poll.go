package patch

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// errAlreadyDone makes a job update a no-op when another poll (or process)
// already reported the job: what makes "nothing reported twice" hold.
var errAlreadyDone = errors.New("already reported")

// pollBatch is the most jobs one poll reads from the store; more that are
// due wait for the next poll.
const pollBatch = 2000

// Poll reads every job of the target named site that is due (store.DueJobs:
// its NextPoll came; a poll claim moves it on), at most
// PollConcurrency at once, each under a poll claim (SlotPoll) so that
// across replicas a job is read at most once per interval, and has the
// ends of those that ended reported, grouped per request. The first
// target's poll also gives up following the jobs of a target no longer
// configured once they are older than FollowFor.
func (rn *Runner) Poll(ctx context.Context, site string) {
	sites := rn.opts.Fleet.Sites()
	if len(sites) == 0 {
		return
	}
	state := rn.site(site)
	now := rn.opts.Now()
	jobs, err := rn.st.DueJobs(ctx, now, pollBatch)
	if err != nil {
		rn.log.Error().Err(err).Msg("list the jobs due")
		return
	}
	var (
		mu    sync.Mutex
		ended = map[string][]store.Job{} // request ID → jobs whose end this poll claimed
		wg    sync.WaitGroup
		sem   = make(chan struct{}, rn.opts.PollConcurrency)
	)
	type owner struct {
		site Site
		ok   bool // configured
		wait bool // its jobs wait: submitting, answers not posted, or not this site's
	}
	owners := map[string]owner{}
	for _, j := range jobs {
		if ctx.Err() != nil || throttled(state, now) {
			break
		}
		if !pollDue(j, now) {
			continue
		}
		// A job of a request still being submitted, or whose batch answers
		// are not in the thread yet, waits: its job ID goes first.
		o, seen := owners[j.RequestID]
		if !seen {
			r, err := rn.st.Get(ctx, j.RequestID)
			o.site, o.ok = rn.opts.Fleet.SiteOf(r)
			mine := (o.ok && o.site.Name == site) || (!o.ok && site == sites[0].Name)
			o.wait = err != nil || r.State == store.Submitting || r.ResultsPending || !mine
			owners[j.RequestID] = o
		}
		if o.wait {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if done, ok := rn.pollJob(ctx, o.site, o.ok, state, j, now); ok {
				mu.Lock()
				ended[done.RequestID] = append(ended[done.RequestID], done)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for id, js := range ended {
		rn.reportEnds(ctx, id, js)
		// The next wave, a pause or the summary may be due now.
		if err := rn.life.Wake(ctx, id); err != nil {
			rn.log.Error().Err(err).Str("request_id", id).Msg("wake a request whose jobs ended")
		}
		rn.refresh(ctx, id)
	}
}

// pollDue tells whether a job may be read now: nobody holds its poll claim.
func pollDue(j store.Job, now time.Time) bool {
	return j.PollBy == "" || !now.Before(j.PollUntil)
}

// pollWait is how long a poll claim on j lasts: one poll interval, doubled
// after each read error (at most 64 times), less half an interval so that
// the next tick finds it run out.
func (rn *Runner) pollWait(pollErrors int) time.Duration {
	wait := rn.opts.PollInterval
	for i := 0; i < min(pollErrors, 6); i++ {
		wait *= 2
	}
	return wait - rn.opts.PollInterval/2
}

// throttled tells whether a target asked the engine to slow down (HTTP
// 429) and its polling waits until the time it gave.
func throttled(s *siteState, now time.Time) bool {
	until := s.pollPause.Load()
	return until != nil && now.Before(*until)
}

// pollJob reads one job under a poll claim and records what changed. It
// returns the job and true when the job ended (or was given up) and this
// poll claimed the report of its end.
//
// With ok false (a target no longer configured) the job is only given up
// once it is too old.
func (rn *Runner) pollJob(ctx context.Context, site Site, ok bool, state *siteState, j store.Job, now time.Time) (store.Job, bool) {
	log := rn.log.With().Str("request_id", j.RequestID).Str("job_id", j.ID).Str("instance_id", j.InstanceID).Logger()
	if now.Sub(j.SubmittedAt) > rn.opts.FollowFor {
		j2, err := rn.st.UpdateJob(ctx, j.ID, func(x *store.Job) error {
			if !x.Active() {
				return errAlreadyDone
			}
			x.GaveUp = true
			return nil
		})
		if err != nil {
			logJobWrite(log, err, "give up following a job")
			return j, false
		}
		name := "unknown"
		if ok {
			name = site.Name
		}
		rn.opts.Metrics.JobEnded(name, "unfollowed")
		return j2, true
	}
	if !ok || site.Cloud == nil {
		return j, false
	}
	c, err := rn.life.Claim(ctx, SlotPoll, j.ID, rn.pollWait(j.PollErrors))
	if err != nil {
		logJobWrite(log, err, "claim a job's poll")
		return j, false
	}
	job, err := site.Cloud.Job(ctx, j.ID)
	if err != nil {
		if ctx.Err() != nil {
			return j, false
		}
		rn.noteThrottle(site.Name, state, err, now)
		log.Warn().Err(err).Int("poll_errors", j.PollErrors+1).Msg("read job failed; backing off")
		// The claim is kept for the longer wait the failed read earns.
		c.TTL = rn.pollWait(j.PollErrors + 1)
		if err := rn.life.Renew(ctx, &c); err != nil {
			log.Warn().Err(err).Msg("extend the poll claim of a failed read")
		}
		if _, err := rn.st.UpdateJob(ctx, j.ID, func(x *store.Job) error { x.PollErrors++; return nil }); err != nil {
			// Safe: the job is read again next interval, without the backoff.
			log.Warn().Err(err).Msg("record the failed read")
		}
		return j, false
	}
	if !changed(j, job) {
		return j, false // nothing new: no write
	}
	// Record the read and, when the job ended, claim the report of its
	// end in the same write: exactly one poller reports it (a one-way
	// mark, released only when its reply could not be posted).
	j2, err := rn.st.UpdateJob(ctx, j.ID, func(x *store.Job) error {
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
		logJobWrite(log, err, "record a job's status")
		return j, false
	}
	rn.opts.Metrics.JobEnded(site.Name, job.Status)
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
func logJobWrite(log zerolog.Logger, err error, what string) {
	if err == nil || errors.Is(err, errAlreadyDone) || errors.Is(err, ErrHeld) {
		return
	}
	log.Error().Err(err).Msg(what)
}

// noteThrottle pauses every poll of a target when its GeminiDB answered
// 429: the engine backs off together instead of each read retrying on its
// own. Other targets' polls go on.
func (rn *Runner) noteThrottle(name string, s *siteState, err error, now time.Time) {
	var ae *upgrade.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusTooManyRequests {
		return
	}
	until := now.Add(rn.opts.PollInterval)
	s.pollPause.Store(&until)
	rn.log.Warn().Str("target", name).Time("until", until).Msg("GeminiDB asks the bot to slow down (429); job polling of this target pauses")
}

// reportEnds has the ends of jobs (whose reports this poll claimed)
// posted, failures first. The report claims of the jobs the Reporter did
// not report are released, so the next poll tries again.
func (rn *Runner) reportEnds(ctx context.Context, requestID string, jobs []store.Job) {
	// A shutdown must not cut a reply short after it went out: that would
	// release the claim and the next process would post it again.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	log := rn.log.With().Str("request_id", requestID).Logger()
	r, err := rn.st.Get(ctx, requestID)
	if err != nil {
		log.Error().Err(err).Msg("read the request of ended jobs")
		rn.unclaimReports(ctx, log, jobs)
		return
	}
	slices.SortStableFunc(jobs, func(x, y store.Job) int { return endRank(x) - endRank(y) })
	n := rn.rep.JobEnds(ctx, r, jobs)
	if n < len(jobs) {
		rn.unclaimReports(ctx, log, jobs[max(n, 0):])
	}
}

// endRank orders job ends: failures, then jobs no longer followed, then
// completions.
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

// unclaimReports releases the report claims of jobs whose reply did not
// go out, so the next poll reports them again.
func (rn *Runner) unclaimReports(ctx context.Context, log zerolog.Logger, jobs []store.Job) {
	for _, j := range jobs {
		if _, err := rn.st.UpdateJob(ctx, j.ID, func(x *store.Job) error {
			if x.Reported {
				x.Reported = false
			} else {
				x.GaveUp = false // given up this poll: the next gives up again, and reports it
			}
			return nil
		}); err != nil {
			// The job stays claimed as reported: its reply is lost, but its
			// end is still in the counts, the final summary and status.
			log.Error().Err(err).Str("job_id", j.ID).Msg("release the report claim of a job whose reply was not posted; its end is shown only in the summary")
		}
	}
}
