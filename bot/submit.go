package bot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/slack-go/slack"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// claim marks r as being submitted by this process, with a lease it renews
// before every batch call; it is the mutate of the transition to submitting.
func (b *Bot) claim(r *store.Request) {
	r.Owner = b.id
	r.LeaseUntil = b.cfg.Now().Add(b.leaseFor())
}

// leaseFor is how long a submitting request stays claimed without renewal:
// one batch call and the writes around it.
func (b *Bot) leaseFor() time.Duration { return b.cfg.BatchTimeout + time.Minute }

// errLeaseHeld aborts a lease update: the request is claimed by a live
// submitter (or is no longer submitting).
var errLeaseHeld = errors.New("submission lease held by another process")

// renewLease extends this process's claim on a submitting request. It
// reports lost when another process took the request over (this one stalled
// past its lease): then this process must not send or report anything more.
// Any other error (the store unreachable) is returned as err.
func (b *Bot) renewLease(id string) (lost bool, err error) {
	_, err = b.st.Update(id, func(x *store.Request) error {
		if x.Owner != b.id || x.State != store.Submitting {
			return errLeaseHeld
		}
		b.claim(x)
		return nil
	})
	if errors.Is(err, errLeaseHeld) {
		return true, nil
	}
	return false, err
}

// heartbeat renews the lease of request id every third of its length until
// stop is closed; it closes lost if another process took the request over.
func (b *Bot) heartbeat(log zerolog.Logger, id string, stop <-chan struct{}, lost chan<- struct{}) {
	t := time.NewTicker(b.leaseFor() / 3)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			gone, err := b.renewLease(id)
			if gone {
				log.Error().Msg("another process took this submission over; stopping")
				close(lost)
				return
			}
			if err != nil {
				log.Warn().Err(err).Msg("renew submission lease")
			}
		}
	}
}

// goSubmit runs submit in its own goroutine, so a long submission never
// holds a worker that clicks and commands are waiting for. Run waits for it.
func (b *Bot) goSubmit(ctx context.Context, r store.Request, p upgrade.Plan, responseURL string) {
	b.inflight.Add(1)
	go func() {
		defer b.inflight.Done()
		b.safely(ctx, func(ctx context.Context) { b.submit(ctx, r, p, responseURL) })
	}()
}

// submit is run only by the winner of the transition to submitting. It
// posts the channel message, calls the batch API once per batch (never
// retried), records every answer and job, and reports them in the thread.
func (b *Bot) submit(ctx context.Context, r store.Request, p upgrade.Plan, responseURL string) {
	// A batch call in flight and its recording finish even when the bot is
	// asked to stop: a half-recorded submission is the one thing we cannot
	// repair later. Batches not yet sent are not sent after a stop.
	stopping := ctx
	ctx = context.WithoutCancel(ctx)
	log := b.log.With().Str("request_id", r.ID).Str("user", r.Requester).Str("channel", r.Channel).Logger()
	a := auditInfo{RequestID: r.ID, User: r.Requester, Channel: r.Channel, Instances: targetIDs(p)}

	view := ParentView{Request: r, Plan: p}
	_, ts, err := b.api.PostMessageContext(ctx, r.Channel, slack.MsgOptionText(parentText(view), false), slack.MsgOptionBlocks(parentBlocks(view)...))
	if err != nil {
		// Nothing was patched yet: say so and finish the request cleanly.
		log.Error().Err(err).Msg("post channel message; not patching")
		_, _ = b.st.Transition(r.ID, []store.State{store.Submitting}, store.Done, "", nil)
		b.audit("not_submitted", a, "reason", "could not post in channel: "+slackErrorCode(err))
		msg := fmt.Sprintf(":x: Nothing was patched: I could not post in this channel (`%s`). Invite the bot to the channel and run the command again.", esc(slackErrorCode(err)))
		_ = b.respond(ctx, responseURL, true, msg, noticeBlocks(msg))
		return
	}
	r.ParentTS = ts
	if _, err := b.st.Update(r.ID, func(x *store.Request) error { x.ParentTS = ts; return nil }); err != nil {
		log.Error().Err(err).Msg("store parent message ts")
	}
	// Keep the claim alive for the whole submission, reporting included.
	stopBeat, lost := make(chan struct{}), make(chan struct{})
	defer close(stopBeat)
	go b.heartbeat(log, r.ID, stopBeat, lost)
	takenOver := func() bool {
		select {
		case <-lost:
			return true
		default:
			return false
		}
	}

	versions := map[string]upgrade.Target{}
	for _, t := range p.Targets {
		versions[t.Instance.ID] = t
	}
	var results []upgrade.UpgradeResult
	var jobIDs []string
	for _, batch := range p.Batches {
		var answers []upgrade.UpgradeResult
		if takenOver() {
			return // the process that took over reports; we say nothing more
		}
		// A batch is only sent under a freshly renewed lease, so no other
		// process can declare it unknown while it is in flight.
		gone, err := b.renewLease(r.ID)
		switch {
		case gone:
			log.Error().Msg("another process took this submission over; stopping")
			return
		case stopping.Err() != nil:
			answers = notSent(batch, "NOT_SENT", "The bot was shutting down before sending this batch, so nothing was started for this instance. Run the command again for it.")
		case err != nil:
			log.Error().Err(err).Msg("renew submission lease; not sending this batch")
			answers = notSent(batch, "NOT_SENT", "The bot could not record its progress (its store did not answer), so to stay safe this batch was not sent; nothing was started for this instance. Run the command again for it.")
		default:
			answers = b.callBatch(ctx, log, batch)
		}
		results = append(results, answers...)
		// Record each batch's answers at once: should the process die before
		// the next batch, what was started is still followed after a restart.
		now := b.cfg.Now()
		for _, res := range answers {
			if !res.Submitted() {
				continue
			}
			t := versions[res.InstanceID]
			j := store.Job{ID: res.JobID, RequestID: r.ID, InstanceID: res.InstanceID, InstanceName: t.Instance.Name,
				VersionBefore: versionOf(t.Instance), SubmittedAt: now}
			if err := b.st.PutJob(j); err != nil {
				log.Error().Err(err).Str("job_id", j.ID).Msg("store job")
			}
			jobIDs = append(jobIDs, res.JobID)
		}
		raw, _ := json.Marshal(results)
		if _, err := b.st.Update(r.ID, func(x *store.Request) error { x.Results = raw; return nil }); err != nil {
			log.Error().Err(err).Msg("record batch answers")
		}
	}
	b.audit("submitted", a, "job_ids", jobIDs, "errors", len(results)-len(jobIDs))

	// The answers go into the thread before the request counts as submitted:
	// the follower only reports jobs of submitted requests, so a job's end
	// never comes before its job ID.
	if takenOver() {
		return
	}
	for _, blocks := range messages(fmt.Sprintf("*Batch results* (%d submitted, %d not submitted)", len(jobIDs), len(results)-len(jobIDs)), resultLines(p, results)) {
		b.postThread(ctx, r.Channel, ts, "Batch results", blocks)
	}
	next := store.Submitted
	if len(jobIDs) == 0 {
		next = store.Done
	}
	// Only the lease holder ends the submission; a fresh renewal right
	// before leaves no room for another process to take over in between.
	if gone, _ := b.renewLease(r.ID); gone {
		log.Error().Msg("another process took this submission over; stopping")
		return
	}
	if _, err := b.st.Transition(r.ID, []store.State{store.Submitting}, next, "", nil); err != nil {
		log.Error().Err(err).Msg("record submission")
	}
	// The counts, and the final summary should every job already have
	// ended while we were still recording.
	b.refreshRequest(ctx, r.ID)
	msg := fmt.Sprintf(":rocket: Request `%s` submitted: %d of %s accepted. Follow it in the thread.", r.ID, len(jobIDs), plural(len(results), "instance"))
	if responseURL != "" {
		_ = b.respond(ctx, responseURL, true, msg, noticeBlocks(msg))
	}
	if next == store.Done {
		b.postThread(ctx, r.Channel, ts, "Finished", noticeBlocks(fmt.Sprintf("<@%s> no patch job was started; nothing to follow.", r.Requester)))
	}
}

// notSent is the answer for a batch the bot did not send.
func notSent(batch upgrade.Batch, code, msg string) []upgrade.UpgradeResult {
	out := make([]upgrade.UpgradeResult, len(batch.InstanceIDs))
	for i, id := range batch.InstanceIDs {
		out[i] = upgrade.UpgradeResult{InstanceID: id, ErrorCode: code, ErrorMessage: msg}
	}
	return out
}

// callBatch makes one batch call. A whole-call failure (400, 500, network)
// becomes one error result per instance, with the cloud's code and message.
func (b *Bot) callBatch(ctx context.Context, log zerolog.Logger, batch upgrade.Batch) []upgrade.UpgradeResult {
	cctx, cancel := context.WithTimeout(ctx, b.cfg.BatchTimeout)
	defer cancel()
	res, err := b.db.BatchUpgrade(cctx, batch.InstanceIDs)
	if err != nil {
		b.metrics.Batches.WithLabelValues("error").Inc()
		code, msg := "NETWORK", err.Error()
		var ae *upgrade.APIError
		var backoff *upgrade.AuthBackoffError
		switch {
		case errors.As(err, &backoff):
			code, msg = "NOT_SENT", "Not sent: GeminiDB refused the bot's credentials a moment ago ("+backoff.Err.Code+"), so the bot waits before trying them again; nothing was started. Fix the credentials, then run the command again."
		case errors.As(err, &ae):
			code, msg = ae.Code, ae.Message
			if code == "" {
				code = fmt.Sprintf("HTTP %d", ae.Status)
			}
		case errors.Is(err, context.DeadlineExceeded):
			code, msg = "TIMEOUT", "GeminiDB did not answer the batch call in time; the patch may or may not have started — check the console before retrying."
		}
		log.Error().Err(err).Strs("instance_ids", batch.InstanceIDs).Str("error_code", code).Msg("batch upgrade call failed")
		return notSent(batch, code, msg)
	}
	b.metrics.Batches.WithLabelValues("ok").Inc()
	// One result per requested instance, in the order we asked; an instance
	// the API left out is reported, not assumed patched.
	byID := map[string]upgrade.UpgradeResult{}
	for _, r := range res {
		byID[r.InstanceID] = r
	}
	out := make([]upgrade.UpgradeResult, 0, len(batch.InstanceIDs))
	for _, id := range batch.InstanceIDs {
		r, ok := byID[id]
		if !ok {
			r = upgrade.UpgradeResult{InstanceID: id, ErrorCode: "MISSING", ErrorMessage: "The batch API returned no result for this instance; check the console."}
		}
		out = append(out, r)
	}
	return out
}

func versionOf(i upgrade.Instance) string {
	if i.WholeVersion != "" {
		return i.WholeVersion
	}
	return i.Version
}

// postThread posts a reply under the parent message, logging failures.
func (b *Bot) postThread(ctx context.Context, channel, ts, text string, blocks []slack.Block) bool {
	if _, _, err := b.api.PostMessageContext(ctx, channel, slack.MsgOptionTS(ts), slack.MsgOptionText(text, false), slack.MsgOptionBlocks(blocks...)); err != nil {
		b.log.Error().Err(err).Str("channel", channel).Str("thread_ts", ts).Msg("thread reply failed")
		return false
	}
	return true
}

// recoverSubmitting finds requests whose submitter stopped (its lease ran
// out: a crashed process, or a replica that died mid-submission).
// Batches whose answers were recorded carry on as usual (their jobs are
// followed); for the rest, whether the batch call reached GeminiDB is
// unknown, so it is never retried and the thread says which instances to check.
func (b *Bot) recoverSubmitting(ctx context.Context) {
	rs, err := b.st.List(store.Submitting)
	if err != nil {
		b.log.Error().Err(err).Msg("list requests left submitting")
		return
	}
	now := b.cfg.Now()
	for _, r := range rs {
		if now.Before(b.leaseEnd(r)) {
			continue // its submitter is alive (maybe another replica)
		}
		// Take the lease over atomically first: a submitter that renewed it
		// meanwhile keeps its request, and of two recovering replicas one wins.
		claimed, err := b.st.Update(r.ID, func(x *store.Request) error {
			if x.State != store.Submitting || now.Before(b.leaseEnd(*x)) {
				return errLeaseHeld
			}
			b.claim(x)
			return nil
		})
		if err != nil {
			continue
		}
		b.recoverClaimed(ctx, claimed)
	}
}

// leaseEnd is when r's submission lease runs out; a request written without
// one counts from its last update.
func (b *Bot) leaseEnd(r store.Request) time.Time {
	if r.LeaseUntil.IsZero() {
		return r.UpdatedAt.Add(b.leaseFor())
	}
	return r.LeaseUntil
}

// recoverClaimed finishes a submission this process took over: what was
// recorded (answers and jobs, read after the claim, so nothing the stalled
// submitter wrote before is missed) carries on; the rest is unknown.
func (b *Bot) recoverClaimed(ctx context.Context, r store.Request) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), slackWriteTimeout)
	defer cancel()
	log := b.log.With().Str("request_id", r.ID).Logger()
	p, results, err := decode(r)
	if err != nil {
		log.Error().Err(err).Msg("recover request left submitting")
	}
	jobs, err := b.st.Jobs(r.ID)
	if err != nil {
		log.Error().Err(err).Msg("recover request left submitting: read its jobs; trying again later")
		return
	}
	answered := map[string]bool{}
	for _, res := range results {
		answered[res.InstanceID] = true
	}
	for _, j := range jobs {
		answered[j.InstanceID] = true // a job is an answer, even if its result row was not written
	}
	var unknown []string
	for _, t := range p.Targets {
		if !answered[t.Instance.ID] {
			unknown = append(unknown, fmt.Sprintf("*%s* `%s`", esc(t.Instance.Name), esc(t.Instance.ID)))
		}
	}
	next := store.Done
	if len(jobs) > 0 {
		next = store.Submitted
	}
	if _, err := b.st.Transition(r.ID, []store.State{store.Submitting}, next, "", nil); err != nil {
		return
	}
	log.Warn().Int("unknown", len(unknown)).Int("jobs", len(jobs)).
		Msg("request left submitting by a stopped process; recorded jobs are followed, the rest is not retried")
	b.audit("not_submitted", auditInfo{RequestID: r.ID, User: r.Requester, Channel: r.Channel, Instances: targetIDs(p)},
		"reason", "bot stopped while submitting", "unknown", len(unknown))
	msg := fmt.Sprintf(":warning: The bot stopped while submitting request `%s`. %d of %s have a recorded answer and are followed as usual.",
		r.ID, len(p.Targets)-len(unknown), plural(len(p.Targets), "instance"))
	if len(unknown) > 0 {
		msg += fmt.Sprintf(" For these %d, whether the batch call reached GeminiDB is unknown; it is *not* retried — check them in the console:\n", len(unknown)) +
			strings.Join(unknown, "\n")
	}
	if r.ParentTS != "" {
		for _, blocks := range messages("", strings.Split(msg, "\n")) {
			b.postThread(ctx, r.Channel, r.ParentTS, "Interrupted while submitting", blocks)
		}
	} else {
		b.tell(ctx, r.Channel, r.Requester, msg)
	}
}
