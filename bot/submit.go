package bot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	"github.com/slack-go/slack"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// claimFor returns the mutate of a transition to submitting: a claim with a
// fresh token of its own and a lease this process renews before every
// batch call. The lease belongs to the claim, not to the process, so a
// process that takes its own stalled submission over still fences the old
// goroutine. It also marks the batch answers as not yet in the thread.
func (b *Bot) claimFor() (token string, claim func(*store.Request)) {
	token = newID("claim-")
	return token, func(r *store.Request) {
		r.Owner = token
		r.LeaseUntil = b.cfg.Now().Add(b.leaseFor())
		r.ResultsPending = true
	}
}

// leaseFor is how long a submitting request stays claimed without renewal:
// one batch call and the writes around it.
func (b *Bot) leaseFor() time.Duration { return b.cfg.BatchTimeout + time.Minute }

// errLeaseHeld aborts a lease update: the request is claimed by a live
// submitter (or is no longer submitting).
var errLeaseHeld = errors.New("submission lease held by another claim")

// renewLease extends the claim token holds on a submitting request and
// applies also (may be nil) in the same write. It reports lost when another
// claim took the request over (this one stalled past its lease): then its
// holder must not send or report anything more. Any other error (the store
// unreachable) is returned as err.
func (b *Bot) renewLease(id, token string, also func(*store.Request)) (lost bool, err error) {
	_, err = b.st.Update(id, func(x *store.Request) error {
		if x.Owner != token || x.State != store.Submitting {
			return errLeaseHeld
		}
		x.LeaseUntil = b.cfg.Now().Add(b.leaseFor())
		if also != nil {
			also(x)
		}
		return nil
	})
	if errors.Is(err, errLeaseHeld) {
		return true, nil
	}
	return false, err
}

// heartbeat renews the lease of request id every third of its length until
// stop is closed; it closes lost if another claim took the request over.
func (b *Bot) heartbeat(log zerolog.Logger, id, token string, stop <-chan struct{}, lost chan<- struct{}) {
	t := time.NewTicker(b.leaseFor() / 3)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			gone, err := b.renewLease(id, token, nil)
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
	b.busy.Add(1)
	go func() {
		defer b.inflight.Done()
		defer b.busy.Add(-1)
		b.safely(ctx, func(ctx context.Context) { b.submit(ctx, r, p, responseURL) })
	}()
}

// submit is run only by the winner of the transition to submitting (r
// carries its claim). It posts the channel message, calls the batch API
// once per batch (never retried), records every answer and job, and
// reports them in the thread.
func (b *Bot) submit(ctx context.Context, r store.Request, p upgrade.Plan, responseURL string) {
	// A batch call in flight and its recording finish even when the bot is
	// asked to stop: a half-recorded submission is the one thing we cannot
	// repair later. Batches not yet sent are not sent after a stop.
	stopping := ctx
	ctx = context.WithoutCancel(ctx)
	token := r.Owner
	log := b.log.With().Str("request_id", r.ID).Str("user", r.Requester).Str("channel", r.Channel).Logger()
	a := requestAudit(r, r.Requester, targetIDs(p))
	tg := b.targets.of(r)

	view := ParentView{Request: r, Plan: p, Target: b.targets.labelOf(r)}
	_, ts, err := b.api.PostMessageContext(ctx, r.Channel, slack.MsgOptionText(parentText(view), false), slack.MsgOptionBlocks(parentBlocks(view)...))
	if err != nil {
		// Nothing was patched yet: say so and finish the request cleanly.
		log.Error().Err(err).Msg("post channel message; not patching")
		if _, terr := b.st.Transition(r.ID, []store.State{store.Submitting}, store.Done, "", nil); terr != nil {
			// Safe: the lease runs out and recovery finds no batch in
			// flight, so every instance is recorded as not sent.
			log.Error().Err(terr).Msg("record the request as done after the channel post failed")
		}
		b.audit("not_submitted", a, "reason", "could not post in channel: "+slackErrorCode(err))
		msg := fmt.Sprintf(":x: Nothing was patched: I could not post in this channel (`%s`). Invite the bot to the channel and run the command again.", esc(slackErrorCode(err)))
		b.respondOrLog(ctx, responseURL, msg)
		return
	}
	r.ParentTS = ts
	if _, err := b.st.Update(r.ID, func(x *store.Request) error { x.ParentTS = ts; return nil }); err != nil {
		// The thread replies of this process still go under ts; only a
		// process taking over would post them in the channel itself.
		log.Error().Err(err).Msg("store parent message ts")
	}
	// Keep the claim alive for the whole submission, reporting included.
	stopBeat, lost := make(chan struct{}), make(chan struct{})
	defer close(stopBeat)
	go b.heartbeat(log, r.ID, token, stopBeat, lost)
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
		// A batch is only sent under a freshly renewed lease that also
		// names it in flight, so no other process can take it over while
		// it is, and one that takes over later knows it may have started.
		inFlight := func(x *store.Request) { x.InFlight = batch.InstanceIDs }
		if stopping.Err() != nil {
			inFlight = nil
		}
		gone, err := b.renewLease(r.ID, token, inFlight)
		switch {
		case gone:
			log.Error().Msg("another process took this submission over; stopping")
			return
		case stopping.Err() != nil:
			answers = notSent(batch, "The bot was shutting down before sending this batch, so nothing was started for this instance. Run the command again for it.")
		case err != nil:
			log.Error().Err(err).Msg("renew submission lease; not sending this batch")
			answers = notSent(batch, "The bot could not record its progress (its store did not answer), so to stay safe this batch was not sent; nothing was started for this instance. Run the command again for it.")
		default:
			answers = b.callBatch(ctx, tg, log, batch)
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
				// The answer below still records the job ID, so the
				// thread names it; only its end will not be followed.
				log.Error().Err(err).Str("job_id", j.ID).Msg("store job")
			}
			jobIDs = append(jobIDs, res.JobID)
		}
		raw, err := json.Marshal(results)
		if err == nil {
			_, err = b.st.Update(r.ID, func(x *store.Request) error { x.Results, x.InFlight = raw, nil; return nil })
		}
		if err != nil {
			// Should this process die now, a takeover reports this batch
			// as unknown (it is still named in flight): never "not sent".
			log.Error().Err(err).Msg("record batch answers")
		}
	}
	counts := countJobs(results, nil)
	b.audit("submitted", a, "job_ids", jobIDs, "errors", counts.NotSubmitted, "unknown", counts.Unknown)

	// The answers go into the thread before any job's end: the follower
	// waits while the request is submitting or its answers are pending.
	if takenOver() {
		return
	}
	r.Results, _ = json.Marshal(results)
	// Only the lease holder ends the submission; a fresh renewal right
	// before leaves no room for another process to take over in between.
	if gone, err := b.renewLease(r.ID, token, nil); gone {
		log.Error().Msg("another process took this submission over; stopping")
		return
	} else if err != nil {
		log.Warn().Err(err).Msg("renew submission lease before recording the submission")
	}
	if _, err := b.st.Transition(r.ID, []store.State{store.Submitting}, store.Submitted, "", nil); err != nil {
		// Safe: the lease runs out and a takeover follows what was recorded.
		log.Error().Err(err).Msg("record submission")
	}
	b.postResults(ctx, r, p, results, "")
	// The counts, and the final summary should every job already have
	// ended while we were still recording.
	b.refreshRequest(ctx, r.ID)
	msg := fmt.Sprintf(":rocket: Request `%s` submitted: %d of %s accepted.", r.ID, len(jobIDs), plural(len(results), "instance"))
	if counts.Unknown > 0 {
		msg += fmt.Sprintf(" For %d the outcome is unknown: the patch may have started, check the console before retrying.", counts.Unknown)
	}
	b.respondOrLog(ctx, responseURL, msg+" Follow it in the thread.")
}

// postResults puts the batch answers in the request's thread, part by part,
// skipping the parts a previous try posted; once all are out the request's
// answers are no longer pending. A part Slack refuses is tried again on a
// later tick (finishQuietRequests). It reports whether all parts are out.
func (b *Bot) postResults(ctx context.Context, r store.Request, p upgrade.Plan, results []upgrade.UpgradeResult, note string) bool {
	c := countJobs(results, nil)
	title := fmt.Sprintf("*Batch results* (%d submitted%s)", len(results)-c.NotSubmitted-c.Unknown, c.batchTail())
	title = titled(title, b.targets.labelOf(r))
	if note != "" {
		title = note + "\n" + title
	}
	if !b.postParts(ctx, r, "results", "Batch results", messages(title, resultLines(p, results))) {
		return false
	}
	if _, err := b.st.Update(r.ID, func(x *store.Request) error { x.ResultsPending = false; return nil }); err != nil {
		// Safe: the next tick finds every part posted and tries again.
		b.log.Error().Err(err).Str("request_id", r.ID).Msg("record that the batch answers are posted")
		return false
	}
	return true
}

// postParts posts the thread messages of one report (key "results" or
// "summary"), from the first one not yet recorded as posted, recording each
// as it goes out. It reports whether every part is out.
func (b *Bot) postParts(ctx context.Context, r store.Request, key, text string, parts [][]slack.Block) bool {
	for i := r.Posted[key]; i < len(parts); i++ {
		if !b.postThread(ctx, r.Channel, r.ParentTS, text, parts[i]) {
			return false
		}
		if _, err := b.st.Update(r.ID, func(x *store.Request) error {
			if x.Posted == nil {
				x.Posted = map[string]int{}
			}
			x.Posted[key] = i + 1
			return nil
		}); err != nil {
			// Not recorded: a later try may post this part again, which
			// beats losing the rest of the report.
			b.log.Error().Err(err).Str("request_id", r.ID).Str("report", key).Msg("record a posted thread reply")
			return false
		}
	}
	return true
}

// respondOrLog answers on a response_url, logging (without the URL, a
// credential) when that fails: the thread carries the same news.
func (b *Bot) respondOrLog(ctx context.Context, responseURL, msg string) {
	if responseURL == "" {
		return
	}
	if err := b.respond(ctx, responseURL, true, msg, noticeBlocks(msg)); err != nil {
		b.log.Info().Err(err).Msg("could not update the plan message (its response_url may have expired)")
	}
}

// The bot's own error codes for an instance's batch answer; any other code
// is the cloud's answer (nothing started).
const (
	// CodeNotSent: the bot did not send the instance; nothing started.
	CodeNotSent = "NOT_SENT"
	// CodeUnknown: the call may have reached GeminiDB (a timeout, a lost
	// connection, a crash mid-call); the patch may have started.
	CodeUnknown = "UNKNOWN"
)

// unknownCodes are the codes whose outcome is unknown, including those that
// older versions recorded for a timeout, a network error or a missing row.
var unknownCodes = map[string]bool{CodeUnknown: true, "TIMEOUT": true, "NETWORK": true, "MISSING": true}

// unknownOutcome tells whether a batch answer leaves open whether the patch
// started.
func unknownOutcome(r upgrade.UpgradeResult) bool { return !r.Submitted() && unknownCodes[r.ErrorCode] }

// notSent is the answer for a batch the bot did not send.
func notSent(batch upgrade.Batch, msg string) []upgrade.UpgradeResult {
	return answerAll(batch.InstanceIDs, CodeNotSent, msg)
}

// answerAll gives every instance the same answer.
func answerAll(ids []string, code, msg string) []upgrade.UpgradeResult {
	out := make([]upgrade.UpgradeResult, len(ids))
	for i, id := range ids {
		out[i] = upgrade.UpgradeResult{InstanceID: id, ErrorCode: code, ErrorMessage: msg}
	}
	return out
}

// callBatch makes one batch call with target tg's client. A whole-call
// failure becomes one answer per instance: the cloud's code and message for
// an HTTP error (nothing started), NOT_SENT when the call certainly never
// left the bot (or tg is nil: the target is no longer configured), and
// UNKNOWN otherwise (it may have reached GeminiDB).
func (b *Bot) callBatch(ctx context.Context, tg *target, log zerolog.Logger, batch upgrade.Batch) []upgrade.UpgradeResult {
	if tg == nil {
		return notSent(batch, "Not sent: the request's GeminiDB target is no longer configured; nothing was started.")
	}
	cctx, cancel := context.WithTimeout(ctx, b.cfg.BatchTimeout)
	defer cancel()
	res, err := tg.DB.BatchUpgrade(cctx, batch.InstanceIDs)
	if err != nil {
		b.metrics.Batches.WithLabelValues(tg.Name, "error").Inc()
		code, msg := batchFailure(err)
		log.Error().Err(err).Strs("instance_ids", batch.InstanceIDs).Str("error_code", code).Msg("batch upgrade call failed")
		return answerAll(batch.InstanceIDs, code, msg)
	}
	b.metrics.Batches.WithLabelValues(tg.Name, "ok").Inc()
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
			r = upgrade.UpgradeResult{InstanceID: id, ErrorCode: CodeUnknown, ErrorMessage: "The batch call was answered but named no result for this instance: the patch may have started. Check the console before retrying."}
		}
		out = append(out, r)
	}
	return out
}

// batchFailure is the answer recorded for every instance of a batch call
// that failed as a whole.
func batchFailure(err error) (code, msg string) {
	var ae *upgrade.APIError
	var backoff *upgrade.AuthBackoffError
	var redirect *upgrade.RedirectError
	switch {
	case errors.As(err, &backoff):
		return CodeNotSent, "Not sent: GeminiDB refused the bot's credentials a moment ago (" + backoff.Err.Code + "), so the bot waits before trying them again; nothing was started. Fix the credentials, then run the command again."
	case upgrade.NotSent(err):
		// Before an *APIError: a refused IAM login is one, but it came
		// before the batch call was made.
		return CodeNotSent, "Not sent: the batch call never reached GeminiDB (" + err.Error() + "); nothing was started. Run the command again for it."
	case errors.As(err, &redirect):
		return CodeUnknown, fmt.Sprintf("GeminiDB answered the batch call with a redirect (HTTP %d to %s), which the bot never follows: check GEMINIDB_ENDPOINT, and check the console before retrying (the patch may have started).", redirect.Status, redirect.Host)
	case errors.As(err, &ae):
		code = ae.Code
		if code == "" {
			code = fmt.Sprintf("HTTP %d", ae.Status)
		}
		return code, ae.Message
	case errors.Is(err, context.DeadlineExceeded):
		return CodeUnknown, "GeminiDB did not answer the batch call in time: the patch may have started. Check the console before retrying."
	default:
		return CodeUnknown, "The connection to GeminiDB failed during the batch call (" + err.Error() + "): the patch may have started. Check the console before retrying."
	}
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
// followed); the batch that was in flight has an unknown outcome and is
// never retried; batches never sent are reported as not sent.
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
		// Take the lease over atomically first, with a claim of our own: a
		// submitter that renewed it meanwhile keeps its request, and of two
		// recovering replicas one wins.
		_, claim := b.claimFor()
		claimed, err := b.st.Update(r.ID, func(x *store.Request) error {
			if x.State != store.Submitting || now.Before(b.leaseEnd(*x)) {
				return errLeaseHeld
			}
			claim(x)
			return nil
		})
		if err != nil {
			if !errors.Is(err, errLeaseHeld) {
				b.log.Error().Err(err).Str("request_id", r.ID).Msg("take over a stalled submission; trying again later")
			}
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
// submitter wrote before is missed) carries on; the batch in flight is
// unknown; the rest was never sent.
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
		if !answered[j.InstanceID] { // a job is an answer, even if its row was not written
			results = append(results, upgrade.UpgradeResult{InstanceID: j.InstanceID, JobID: j.ID})
			answered[j.InstanceID] = true
		}
	}
	inFlight := map[string]bool{}
	for _, id := range r.InFlight {
		inFlight[id] = true
	}
	var unknown, unsent []string
	for _, t := range p.Targets {
		id := t.Instance.ID
		switch {
		case answered[id]:
		case inFlight[id]:
			unknown = append(unknown, id)
		default:
			unsent = append(unsent, id)
		}
	}
	results = append(results, answerAll(unknown, CodeUnknown, "The bot stopped while this batch call was in flight: the patch may have started. Check the console before retrying; the bot does not retry it.")...)
	results = append(results, answerAll(unsent, CodeNotSent, "The bot stopped before sending this batch, so nothing was started for this instance. Run the command again for it.")...)
	raw, err := json.Marshal(results)
	if err != nil {
		log.Error().Err(err).Msg("encode recovered answers")
		return
	}
	r, err = b.st.Transition(r.ID, []store.State{store.Submitting}, store.Submitted, "", func(x *store.Request) {
		x.Results, x.InFlight, x.ResultsPending = raw, nil, true
	})
	if err != nil {
		log.Error().Err(err).Msg("record the recovered submission; trying again later")
		return
	}
	log.Warn().Int("unknown", len(unknown)).Int("not_sent", len(unsent)).Int("jobs", len(jobs)).
		Msg("request left submitting by a stopped process; recorded jobs are followed, the rest is not retried")
	b.audit("not_submitted", requestAudit(r, r.Requester, targetIDs(p)),
		"reason", "bot stopped while submitting", "unknown", len(unknown), "not_sent", len(unsent))
	note := fmt.Sprintf(":warning: The bot stopped while submitting request `%s`; these are the answers it had recorded.", r.ID)
	if len(unknown) > 0 {
		note += fmt.Sprintf(" For %d the batch call was in flight: the patch may have started, check the console before retrying (it is *not* retried).", len(unknown))
	}
	if r.ParentTS == "" {
		b.tell(ctx, r.Channel, r.Requester, note)
	}
	b.postResults(ctx, r, p, results, note)
	b.refreshRequest(ctx, r.ID)
}
