package bot

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// errAlreadyDone makes a job update a no-op when another poll (or process)
// already reported the job: what makes "nothing reported twice" hold.
var errAlreadyDone = errors.New("already reported")

// slackWriteTimeout bounds a Slack write that must finish even during shutdown.
const slackWriteTimeout = 30 * time.Second

// pollConcurrency bounds the job reads in flight at once.
const pollConcurrency = 4

// follow polls every tracked job each PollInterval until it ends, and
// reports each end once in the request's thread. Jobs live in the store, so
// a restarted bot picks them up where the previous one stopped.
func (b *Bot) follow(ctx context.Context) {
	b.finishQuietRequests(ctx)
	b.expireStale(ctx)
	b.pollOnce(ctx)
	t := time.NewTicker(b.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			b.recoverSubmitting(ctx)
			b.expireStale(ctx)
			b.pollOnce(ctx)
			b.finishQuietRequests(ctx)
			b.ticks.Add(1)
		}
	}
}

// expireStale moves plans and approval requests past BOT_CONFIRM_TTL to
// expired and replaces their messages, so stale buttons do not linger.
func (b *Bot) expireStale(ctx context.Context) {
	// Approved is listed too: this version goes from awaiting approval
	// straight to submitting, but a request left approved by an older one
	// must not stay open for ever.
	open := []store.State{store.Planned, store.AwaitingApproval, store.Approved}
	rs, err := b.st.List(open...)
	if err != nil {
		b.log.Error().Err(err).Msg("list open plans")
		return
	}
	now := b.cfg.Now()
	for _, r := range rs {
		if now.Before(r.ExpiresAt) {
			continue
		}
		r2, err := b.st.Transition(r.ID, open, store.Expired, "", nil)
		if err != nil {
			continue // decided meanwhile
		}
		p, _, err := decode(r)
		if err != nil {
			b.log.Error().Err(err).Msg("expire plan")
		}
		b.audit("expired", auditInfo{RequestID: r.ID, User: r.Requester, Channel: r.Channel, Instances: targetIDs(p)})
		msg := expiredNote(r)
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), slackWriteTimeout)
		if r2.ResponseURL != "" {
			if err := b.respond(wctx, r2.ResponseURL, true, msg, noticeBlocks(msg)); err != nil {
				b.log.Info().Err(err).Str("request_id", r.ID).Msg("could not mark the expired plan (response_url may have expired)")
			}
		}
		b.updateMessage(wctx, r2.Channel, r2.ApprovalTS, msg, noticeBlocks(msg))
		cancel()
	}
}

// finishQuietRequests completes what a submitted request still owes its
// thread: batch answers that Slack refused to take (tried again until
// posted), and the final summary of a request whose jobs have all ended
// (the bot stopped in between, or Slack refused the post).
func (b *Bot) finishQuietRequests(ctx context.Context) {
	rs, err := b.st.List(store.Submitted)
	if err != nil {
		b.log.Error().Err(err).Msg("list submitted requests")
		return
	}
	for _, r := range rs {
		if r.ResultsPending {
			b.repostResults(ctx, r)
			continue
		}
		jobs, err := b.st.Jobs(r.ID)
		if err != nil {
			b.log.Error().Err(err).Str("request_id", r.ID).Msg("read jobs")
			continue
		}
		if allEnded(jobs) {
			b.refreshRequest(ctx, r.ID)
		}
	}
}

// repostResults posts the rest of a submitted request's batch answers,
// under the report claim so that one process posts them.
func (b *Bot) repostResults(ctx context.Context, r store.Request) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), slackWriteTimeout)
	defer cancel()
	r, ok := b.claimReport(r.ID)
	if !ok || !r.ResultsPending {
		return
	}
	defer b.releaseReport(r.ID)
	p, results, err := decode(r)
	if err != nil {
		b.log.Error().Err(err).Str("request_id", r.ID).Msg("post batch answers")
		return
	}
	if b.postResults(ctx, r, p, results, "") {
		b.refreshRequest(ctx, r.ID)
	}
}

// claimReport claims the posting of a submitted request's thread reports
// for reportClaim: exactly one process posts them; a claim whose holder
// died runs out. It returns the request as claimed.
func (b *Bot) claimReport(id string) (store.Request, bool) {
	now := b.cfg.Now()
	r, err := b.st.Update(id, func(x *store.Request) error {
		if x.State != store.Submitted || (x.SummaryBy != "" && now.Before(x.SummaryUntil)) {
			return errAlreadyDone
		}
		x.SummaryBy, x.SummaryUntil = b.id, now.Add(reportClaim)
		return nil
	})
	if err != nil {
		if !errors.Is(err, errAlreadyDone) {
			b.log.Error().Err(err).Str("request_id", id).Msg("claim the thread report")
		}
		return r, false
	}
	return r, true
}

// releaseReport gives the report claim up so a later tick may try again.
func (b *Bot) releaseReport(id string) {
	if _, err := b.st.Update(id, func(x *store.Request) error {
		if x.SummaryBy == b.id {
			x.SummaryBy, x.SummaryUntil = "", time.Time{}
		}
		return nil
	}); err != nil {
		// Safe: the claim runs out after reportClaim and a later tick retries.
		b.log.Warn().Err(err).Str("request_id", id).Msg("release the thread report claim")
	}
}

// allEnded tells whether every job has been reported or given up.
func allEnded(jobs []store.Job) bool {
	for _, j := range jobs {
		if j.Active() {
			return false
		}
	}
	return true
}

// jobInstances lists the instance IDs of jobs.
func jobInstances(jobs []store.Job) []string {
	ids := make([]string, len(jobs))
	for i, j := range jobs {
		ids[i] = j.InstanceID
	}
	return ids
}

// reportClaim is how long a process may take to post a request's thread
// report (batch answers, final summary) before another may try.
const reportClaim = 2 * time.Minute

// pollOnce reads every job that is due and reports those that ended.
func (b *Bot) pollOnce(ctx context.Context) {
	jobs, err := b.st.ActiveJobs()
	if err != nil {
		b.log.Error().Err(err).Msg("list tracked jobs")
		return
	}
	now := b.cfg.Now()
	var (
		mu      sync.Mutex
		touched = map[string]bool{}
		wg      sync.WaitGroup
		sem     = make(chan struct{}, pollConcurrency)
	)
	submitting := map[string]bool{} // request ID → still being submitted
	for _, j := range jobs {
		if ctx.Err() != nil {
			break
		}
		if !b.due(j, now) {
			continue
		}
		// A job of a request still being submitted waits: its job ID goes
		// into the thread first.
		busy, seen := submitting[j.RequestID]
		if !seen {
			r, err := b.st.Get(j.RequestID)
			busy = err != nil || r.State == store.Submitting || r.ResultsPending
			submitting[j.RequestID] = busy
		}
		if busy {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if b.pollJob(ctx, j, now) {
				mu.Lock()
				touched[j.RequestID] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for id := range touched {
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

// pollJob reads one job; it reports whether the job ended (or was given up).
func (b *Bot) pollJob(ctx context.Context, j store.Job, now time.Time) bool {
	log := b.log.With().Str("request_id", j.RequestID).Str("job_id", j.ID).Str("instance_id", j.InstanceID).Logger()
	if now.Sub(j.SubmittedAt) > b.cfg.FollowFor {
		j2, err := b.st.UpdateJob(j.ID, func(x *store.Job) error {
			if x.Reported || x.GaveUp {
				return errAlreadyDone
			}
			x.GaveUp = true
			return nil
		})
		if err != nil {
			return false
		}
		b.metrics.Jobs.WithLabelValues("unfollowed").Inc()
		b.reportJob(ctx, j2, func() {})
		return true
	}
	job, err := b.db.Job(ctx, j.ID)
	if err != nil {
		if ctx.Err() != nil {
			return false
		}
		log.Warn().Err(err).Int("poll_errors", j.PollErrors+1).Msg("read job failed; backing off")
		if _, err := b.st.UpdateJob(j.ID, func(x *store.Job) error { x.PollErrors++; x.LastPolled = now; return nil }); err != nil {
			// Safe: the job is read again next tick, without the backoff.
			log.Warn().Err(err).Msg("record the failed read")
		}
		return false
	}
	_, err = b.st.UpdateJob(j.ID, func(x *store.Job) error {
		if x.Reported {
			return errAlreadyDone
		}
		x.Status, x.Progress, x.FailReason = job.Status, job.Progress, job.FailReason
		x.Started, x.Ended = job.Started, job.Ended
		if x.InstanceName == "" {
			x.InstanceName = job.InstanceName
		}
		x.LastPolled, x.PollErrors = now, 0
		return nil
	})
	if err != nil || !job.Finished() {
		return false
	}
	// Claim the report atomically: exactly one poller posts it.
	j2, err := b.st.UpdateJob(j.ID, func(x *store.Job) error {
		if x.Reported {
			return errAlreadyDone
		}
		x.Reported = true
		return nil
	})
	if err != nil {
		return false
	}
	b.metrics.Jobs.WithLabelValues(job.Status).Inc()
	b.reportJob(ctx, j2, func() {
		// The reply did not go out: release the claim so the next poll retries.
		if _, err := b.st.UpdateJob(j.ID, func(x *store.Job) error { x.Reported = false; return nil }); err != nil {
			// The job stays claimed as reported: its reply is lost, but its
			// end is still in the counts, the final summary and status.
			log.Error().Err(err).Msg("release the report claim of a job whose reply Slack refused; its end is shown only in the summary")
		}
	})
	return true
}

// reportJob posts a job's end in its request's thread; unclaim runs when
// the post failed.
func (b *Bot) reportJob(ctx context.Context, j store.Job, unclaim func()) {
	// A shutdown must not cut a reply short after Slack got it: that would
	// release the claim and the next process would post it again.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), slackWriteTimeout)
	defer cancel()
	r, err := b.st.Get(j.RequestID)
	if err != nil {
		b.log.Error().Err(err).Str("job_id", j.ID).Msg("read request of job")
		unclaim()
		return
	}
	b.audit("job_finished", auditInfo{RequestID: r.ID, User: r.Requester, Channel: r.Channel, Instances: []string{j.InstanceID}},
		"job_id", j.ID, "status", j.Status, "fail_reason", j.FailReason, "gave_up", j.GaveUp)
	line := jobLine(j, b.cfg.Now())
	if !b.postThread(ctx, r.Channel, r.ParentTS, line, noticeBlocks(line)) {
		unclaim()
	}
}

// refreshRequest updates the parent message's counts and, once every job
// has ended, posts the final summary (exactly once: the submitted → done
// transition decides who posts it).
func (b *Bot) refreshRequest(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), slackWriteTimeout)
	defer cancel()
	r, err := b.st.Get(id)
	if err != nil {
		return
	}
	p, results, err := decode(r)
	if err != nil {
		b.log.Error().Err(err).Str("request_id", id).Msg("refresh request")
		return
	}
	jobs, err := b.st.Jobs(id)
	if err != nil {
		b.log.Error().Err(err).Str("request_id", id).Msg("read jobs")
		return
	}
	counts := countJobs(results, jobs)
	if !allEnded(jobs) || r.State != store.Submitted || r.ResultsPending {
		b.updateMessage(ctx, r.Channel, r.ParentTS, parentText(ParentView{Request: r, Plan: p}),
			parentBlocks(ParentView{Request: r, Plan: p, Counts: &counts, Finished: r.State == store.Done}))
		return
	}
	// Claim the summary: exactly one process posts it; if Slack refuses
	// a part, the claim is released and a later tick posts the rest. The
	// request is done only once the whole summary is out.
	r, ok := b.claimReport(id)
	if !ok {
		return
	}
	if !b.postSummary(ctx, r, p, results, jobs, counts) {
		b.releaseReport(id)
		return
	}
	if r, err = b.st.Transition(id, []store.State{store.Submitted}, store.Done, "", nil); err != nil {
		// The summary is out (recorded part by part), so a retry posts
		// nothing twice; it only marks the request done.
		b.log.Error().Err(err).Str("request_id", id).Msg("mark request done")
		b.releaseReport(id)
		return
	}
	b.audit("done", auditInfo{RequestID: r.ID, User: r.Requester, Channel: r.Channel, Instances: jobInstances(jobs)},
		"completed", counts.Completed, "failed", counts.Failed, "not_submitted", counts.NotSubmitted, "unknown", counts.Unknown)
	b.updateMessage(ctx, r.Channel, r.ParentTS, parentText(ParentView{Request: r, Plan: p}), parentBlocks(ParentView{Request: r, Plan: p, Counts: &counts, Finished: true}))
}

// postSummary posts the final thread reply: versions before → after,
// looked up again, every instance that did not start named (unknown ones
// with a warning that they may have started), and a mention of the
// requester. It reports whether every part of it is out.
func (b *Bot) postSummary(ctx context.Context, r store.Request, p upgrade.Plan, results []upgrade.UpgradeResult, jobs []store.Job, counts Counts) bool {
	ids := jobInstances(jobs)
	for _, res := range results {
		if unknownOutcome(res) {
			ids = append(ids, res.InstanceID)
		}
	}
	after := map[string]upgrade.Instance{}
	if len(ids) > 0 {
		if res, err := b.db.Resolve(ctx, ids); err == nil {
			for _, instID := range ids {
				if inst, ok := res.Found[instID]; ok {
					after[instID] = inst
				}
			}
		} else {
			b.log.Warn().Err(err).Str("request_id", r.ID).Msg("look versions up for the summary")
		}
	}
	title := fmt.Sprintf("<@%s> request `%s` finished: %s.", r.Requester, r.ID, counts.String())
	switch {
	case len(jobs) == 0 && counts.Unknown == 0:
		title += "\nNo patch job was started; nothing to follow."
	case counts.Unknown > 0:
		title += fmt.Sprintf("\n:warning: %s may have started: check the console before retrying.", plural(counts.Unknown, "instance"))
	}
	lines := summaryLines(r, jobs, after)
	lines = append(lines, unstartedLines(p, results, after)...)
	if len(jobs) > 0 {
		title += "\n*Versions before → after*"
	}
	return b.postParts(ctx, r, "summary", fmt.Sprintf("Request %s finished", r.ID), messages(title, lines))
}
