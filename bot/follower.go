package bot

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/patch"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// errAlreadyDone makes a job update a no-op when another poll (or process)
// already reported the job: what makes "nothing reported twice" hold.
var errAlreadyDone = errors.New("already reported")

// slackWriteTimeout bounds a Slack write that must finish even during shutdown.
const slackWriteTimeout = 30 * time.Second

// openStates are the states whose requests the follower looks at: those
// that may still expire, send, be taken over, pause or owe a summary.
// Stopped is final, but a stopped request owes its summary.
var openStates = []store.State{store.Planned, store.AwaitingApproval, store.Approved, store.Submitting, store.Submitted, store.Stopped}

// advanceAll does what is due for every open request (patch.Next): expire
// a plan past its TTL, take over a stalled wave, send a wave whose time has
// come, pause on a failed canary, post what a request owes its thread.
func (b *Bot) advanceAll(ctx context.Context) {
	rs, err := b.st.List(ctx, openStates...)
	if err != nil {
		b.log.Error().Err(err).Msg("list open requests")
		return
	}
	for _, r := range rs {
		if ctx.Err() != nil {
			return
		}
		if r.State == store.Stopped && finished(r) {
			continue
		}
		b.advance(ctx, r)
	}
}

// finished tells whether a request's final summary is out.
func finished(r store.Request) bool {
	ro, err := patch.RolloutOf(r)
	return err == nil && ro.Finished != nil
}

// advance does what is due for request r now.
func (b *Bot) advance(ctx context.Context, r store.Request) {
	log := b.log.With().Str("request_id", r.ID).Logger()
	if r.ResultsPending && (r.State == store.Submitted || r.State == store.Stopped) {
		b.repostResults(ctx, r)
		return
	}
	jobs, err := b.st.Jobs(ctx, r.ID)
	if err != nil {
		log.Error().Err(err).Msg("read jobs")
		return
	}
	step, err := patch.Next(r, jobs, b.cfg.Now())
	if err != nil {
		log.Error().Err(err).Msg("decide what is due")
		return
	}
	switch step.Action {
	case patch.ActionExpire:
		b.expireRequest(ctx, r)
	case patch.ActionRecover:
		b.recoverWave(ctx, r.ID)
	case patch.ActionSend:
		won, s, err := b.life.SendWave(ctx, r.ID, step.Wave, "")
		if err != nil {
			if !errors.Is(err, store.ErrConflict) {
				log.Error().Err(err).Int("wave", step.Wave).Msg("claim a wave")
			}
			return
		}
		log.Info().Int("wave", step.Wave).Str("why", step.Why).Msg("sending the next wave")
		b.goSend(ctx, won, s, "")
	case patch.ActionPause:
		b.pause(ctx, r, step)
	case patch.ActionFinish:
		b.finish(ctx, r.ID)
	}
}

// expireRequest moves a plan or approval request past BOT_CONFIRM_TTL to
// expired and replaces its messages, so stale buttons do not linger.
func (b *Bot) expireRequest(ctx context.Context, r store.Request) {
	r2, err := b.life.Expire(ctx, r.ID, "")
	if err != nil {
		if !errors.Is(err, store.ErrConflict) {
			b.log.Error().Err(err).Str("request_id", r.ID).Msg("expire plan")
		}
		return // decided meanwhile
	}
	p, _, err := decode(r)
	if err != nil {
		b.log.Error().Err(err).Msg("expire plan")
	}
	b.audit("expired", requestAudit(r, r.Requester, targetIDs(p)))
	msg := expiredNote(r)
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), slackWriteTimeout)
	defer cancel()
	if r2.ResponseURL != "" {
		if err := b.respond(wctx, r2.ResponseURL, true, msg, noticeBlocks(msg)); err != nil {
			b.log.Info().Err(err).Str("request_id", r.ID).Msg("could not mark the expired plan (response_url may have expired)")
		}
	}
	b.updateMessage(wctx, r2.Channel, r2.ApprovalTS, msg, noticeBlocks(msg))
}

// repostResults posts the rest of the answers of a request's last wave,
// under the report claim so that one process posts them.
func (b *Bot) repostResults(ctx context.Context, r store.Request) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), slackWriteTimeout)
	defer cancel()
	c, r, ok := b.claimReport(ctx, r.ID)
	if !ok || !r.ResultsPending {
		if ok {
			b.releaseReport(ctx, c)
		}
		return
	}
	defer b.releaseReport(ctx, c)
	p, results, err := decode(r)
	if err != nil {
		b.log.Error().Err(err).Str("request_id", r.ID).Msg("post batch answers")
		return
	}
	ro, err := patch.RolloutOf(r)
	if err != nil {
		b.log.Error().Err(err).Str("request_id", r.ID).Msg("post batch answers")
		return
	}
	k := len(ro.Waves) - 1
	for k > 0 && ro.Waves[k].Started.IsZero() {
		k--
	}
	if b.postResults(ctx, r, p, k, waveResults(results, ro.Waves[k].Batches), "") {
		b.refreshRequest(ctx, r.ID)
	}
}

// claimReport claims the posting of a request's thread reports for
// reportClaim: exactly one process posts them; a claim whose holder died
// runs out. It returns the claim and the request as read after it.
func (b *Bot) claimReport(ctx context.Context, id string) (patch.Claim, store.Request, bool) {
	c, err := b.life.Claim(ctx, patch.SlotReport, id, reportClaim)
	if err != nil {
		if !errors.Is(err, patch.ErrHeld) {
			b.log.Error().Err(err).Str("request_id", id).Msg("claim the thread report")
		}
		return c, store.Request{}, false
	}
	r, err := b.st.Get(ctx, id)
	if err != nil {
		b.log.Error().Err(err).Str("request_id", id).Msg("read the request of a thread report")
		b.releaseReport(ctx, c)
		return c, r, false
	}
	return c, r, true
}

// releaseReport gives the report claim up so a later tick may try again.
func (b *Bot) releaseReport(ctx context.Context, c patch.Claim) {
	if err := b.life.Release(ctx, c); err != nil && !errors.Is(err, patch.ErrLost) {
		// Safe: the claim runs out after reportClaim and a later tick retries.
		b.log.Warn().Err(err).Str("request_id", c.ID).Msg("release the thread report claim")
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

// refreshRequest updates the channel message's counts and rollout, then
// does what is due for the request (the next wave, a pause, the summary).
func (b *Bot) refreshRequest(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), slackWriteTimeout)
	defer cancel()
	r, err := b.st.Get(ctx, id)
	if err != nil {
		return
	}
	b.updateParent(ctx, r)
	b.advance(ctx, r)
}

// updateParent rewrites the channel message of r from the store.
func (b *Bot) updateParent(ctx context.Context, r store.Request) {
	p, results, err := decode(r)
	if err != nil {
		b.log.Error().Err(err).Str("request_id", r.ID).Msg("refresh request")
		return
	}
	jobs, err := b.st.Jobs(ctx, r.ID)
	if err != nil {
		b.log.Error().Err(err).Str("request_id", r.ID).Msg("read jobs")
		return
	}
	counts := countJobs(results, jobs)
	v := b.parentView(r, p, &counts)
	b.updateMessage(ctx, r.Channel, r.ParentTS, parentText(v), b.kitOf(b.targets.of(r)).parentBlocks(v))
}

// finish posts the final summary of a request whose waves are all sent
// (or that was stopped) and whose jobs all ended, under the report claim,
// part by part, then marks it finished (submitted → done). If Slack
// refuses a part, a later tick posts the rest.
func (b *Bot) finish(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), slackWriteTimeout)
	defer cancel()
	c, r, ok := b.claimReport(ctx, id)
	if !ok {
		return
	}
	defer b.releaseReport(ctx, c)
	if finished(r) || (r.State != store.Submitted && r.State != store.Stopped) {
		return
	}
	p, results, err := decode(r)
	if err != nil {
		b.log.Error().Err(err).Str("request_id", id).Msg("final summary")
		return
	}
	jobs, err := b.st.Jobs(ctx, id)
	if err != nil || !allEnded(jobs) {
		return
	}
	counts := countJobs(results, jobs)
	if !b.postSummary(ctx, r, p, results, jobs, counts) {
		return
	}
	r, err = b.life.Finish(ctx, id)
	if err != nil {
		// The summary is out (recorded part by part), so a retry posts
		// nothing twice; it only marks the request finished.
		b.log.Error().Err(err).Str("request_id", id).Msg("mark request finished")
		return
	}
	b.audit("done", requestAudit(r, r.Requester, jobInstances(jobs)),
		"completed", counts.Completed, "failed", counts.Failed, "not_submitted", counts.NotSubmitted, "unknown", counts.Unknown, "state", string(r.State))
	b.updateParent(ctx, r)
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
	lines := b.kitOf(b.targets.of(r)).summaryLines(r, jobs, after)
	lines = append(lines, b.kitOf(b.targets.of(r)).unstartedLines(p, results, after)...)
	if ro, err := patch.RolloutOf(r); err == nil && ro.Stopped != nil {
		unsent := ro.Unsent()
		title += fmt.Sprintf("\n:octagonal_sign: Stopped by %s; %s not sent.", who(ro.Stopped.By), plural(len(unsent), "instance"))
		for _, id := range unsent {
			lines = append(lines, fmt.Sprintf(":no_entry_sign: `%s`: not sent (the rollout was stopped)", esc(id)))
		}
	}
	if len(jobs) > 0 {
		title += "\n*Versions before → after*"
	}
	parts := messages(title, lines)
	// Retry offers a fresh plan of what was not patched.
	if ids, err := patch.NotPatched(r, jobs); err == nil && len(ids) > 0 {
		last := len(parts) - 1
		if len(parts[last]) >= 10 {
			parts = append(parts, nil)
			last++
		}
		parts[last] = append(parts[last], retryBlock(r.ID, len(ids)))
	}
	return b.postParts(ctx, r, "summary", fmt.Sprintf("Request %s finished", r.ID), parts)
}
