package bot

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// errAlreadyDone makes a job update a no-op when another poll (or process)
// already reported the job: what makes "nothing reported twice" hold.
var errAlreadyDone = errors.New("already reported")

// slackWriteTimeout bounds a Slack write that must finish even during shutdown.
const slackWriteTimeout = 30 * time.Second

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
		b.audit("expired", requestAudit(r, r.Requester, targetIDs(p)))
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
		if x.SummaryBy != b.id || x.State != store.Submitted {
			return errAlreadyDone // nothing to release: no write
		}
		x.SummaryBy, x.SummaryUntil = "", time.Time{}
		return nil
	}); err != nil && !errors.Is(err, errAlreadyDone) {
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
			parentBlocks(ParentView{Request: r, Plan: p, Counts: &counts, Finished: r.State == store.Done, Target: b.targets.labelOf(r)}))
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
	b.audit("done", requestAudit(r, r.Requester, jobInstances(jobs)),
		"completed", counts.Completed, "failed", counts.Failed, "not_submitted", counts.NotSubmitted, "unknown", counts.Unknown)
	b.updateMessage(ctx, r.Channel, r.ParentTS, parentText(ParentView{Request: r, Plan: p}), parentBlocks(ParentView{Request: r, Plan: p, Counts: &counts, Finished: true, Target: b.targets.labelOf(r)}))
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
	if tg := b.targets.of(r); len(ids) > 0 && tg != nil {
		if res, err := tg.DB.Resolve(ctx, ids); err == nil {
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
	title = titled(title, b.targets.labelOf(r))
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
