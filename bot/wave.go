package bot

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/slack-go/slack"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/patch"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// goSend runs sendWave in its own goroutine, so a long submission never
// holds a worker that clicks and commands are waiting for. Run waits for it.
func (b *Bot) goSend(ctx context.Context, r store.Request, s *patch.Send, responseURL string) {
	// The send outlives whatever handler started it (a click, a tick's
	// short write context): only the bot shutting down stops its batches.
	if run := b.runCtx.Load(); run != nil {
		ctx = *run
	}
	b.inflight.Add(1)
	b.busy.Add(1)
	go func() {
		defer b.inflight.Done()
		defer b.busy.Add(-1)
		b.safely(ctx, func(ctx context.Context) { b.sendWave(ctx, r, s, responseURL) })
	}()
}

// sendWave is run only by the holder of s, the right to send one wave of
// request r (won by Confirm, Approve or SendWave). It posts the channel
// message (first wave), re-checks the wave's instances, calls the batch API
// once per batch (never retried), records every answer and job, puts the
// answers in the thread and ends the send.
func (b *Bot) sendWave(ctx context.Context, r store.Request, s *patch.Send, responseURL string) {
	// A batch call in flight and its recording finish even when the bot is
	// asked to stop: a half-recorded submission is the one thing we cannot
	// repair later. Batches not yet sent are not sent after a stop.
	stopping := ctx
	ctx = context.WithoutCancel(ctx)
	log := b.log.With().Str("request_id", r.ID).Str("user", r.Requester).Str("channel", r.Channel).Int("wave", s.Wave).Logger()
	p, _, err := decode(r)
	if err != nil {
		log.Error().Err(err).Msg("decode the plan of a wave; not sending it")
		b.endSend(ctx, log, s) // the lease would run out; a takeover reports it all as not sent
		return
	}
	a := requestAudit(r, r.Requester, targetIDs(p))

	if r.ParentTS == "" {
		ts, ok := b.postParent(ctx, log, r, p, s, responseURL, a)
		if !ok {
			return
		}
		r.ParentTS = ts
	}
	if s.Wave < 0 {
		// Every window is closed: the waves go later (the follower sends
		// each when it is due); the channel message shows the schedule.
		b.endSend(ctx, log, s)
		b.refreshRequest(ctx, r.ID)
		b.respondOrLog(ctx, responseURL, fmt.Sprintf(":calendar: Request `%s` is confirmed; its instances are scheduled for their maintenance windows. Follow it in the thread.", r.ID))
		return
	}

	// Keep the claim alive for the whole send, reporting included.
	stopBeat, lost := make(chan struct{}), make(chan struct{})
	defer close(stopBeat)
	go b.heartbeat(ctx, log, s, stopBeat, lost)
	takenOver := func() bool {
		select {
		case <-lost:
			return true
		default:
			return false
		}
	}

	versions := map[string]upgrade.Instance{}
	for _, t := range p.Targets {
		versions[t.Instance.ID] = t.Instance
	}
	for _, sk := range p.Skipped {
		if sk.Instance != nil {
			versions[sk.Instance.ID] = *sk.Instance
		}
	}
	batches, answers := b.recheckWave(ctx, log, r, p, s)
	if len(answers) > 0 {
		if err := b.life.EndBatch(ctx, s, answers); err != nil {
			if errors.Is(err, patch.ErrLost) {
				return
			}
			log.Error().Err(err).Msg("record the instances the re-check refused")
		}
	}
	var jobIDs []string
	for i, batch := range batches {
		if takenOver() {
			return // the process that took over reports; we say nothing more
		}
		var got []upgrade.UpgradeResult
		// A batch is only sent under a freshly renewed claim that also
		// names it in flight, so no other process can take it over while
		// it is, and one that takes over later knows it may have started.
		switch err := b.beginBatch(ctx, stopping, s, batch); {
		case errors.Is(err, patch.ErrLost):
			log.Error().Msg("another process took this wave over; stopping")
			return
		case errors.Is(err, patch.ErrStopped):
			rest := unsentOf(batches[i:])
			got = answerAll(rest, CodeNotSent, "Not sent: the rollout was stopped before this batch; nothing was started for this instance.")
		case errors.Is(err, errShuttingDown):
			got = answerAll(unsentOf(batches[i:]), CodeNotSent, "The bot was shutting down before sending this batch, so nothing was started for this instance. Run the command again for it.")
		case err != nil:
			log.Error().Err(err).Msg("record the batch in flight; not sending it")
			got = answerAll(unsentOf(batches[i:]), CodeNotSent, "The bot could not record its progress (its store did not answer), so to stay safe this batch was not sent; nothing was started for this instance. Run the command again for it.")
		default:
			got = b.callBatch(ctx, b.targets.of(r), log, batch)
		}
		// Record each batch's answers at once: should the process die before
		// the next batch, what was started is still followed after a restart.
		now := b.cfg.Now()
		for _, res := range got {
			if !res.Submitted() {
				continue
			}
			in := versions[res.InstanceID]
			j := store.Job{ID: res.JobID, RequestID: r.ID, InstanceID: res.InstanceID, InstanceName: in.Name,
				VersionBefore: versionOf(in), SubmittedAt: now}
			if err := b.st.PutJob(ctx, j); err != nil {
				// The answer below still records the job ID, so the
				// thread names it; only its end will not be followed.
				log.Error().Err(err).Str("job_id", j.ID).Msg("store job")
			}
			jobIDs = append(jobIDs, res.JobID)
		}
		answers = append(answers, got...)
		if err := b.life.EndBatch(ctx, s, got); err != nil {
			if errors.Is(err, patch.ErrLost) {
				return
			}
			// Should this process die now, a takeover reports this batch
			// as unknown (it is still named in flight): never "not sent".
			log.Error().Err(err).Msg("record batch answers")
		}
		if len(got) > len(batch.InstanceIDs) {
			break // the rest was answered as not sent at once
		}
	}
	counts := countJobs(answers, nil)
	b.audit("submitted", a, "wave", s.Wave, "job_ids", jobIDs, "errors", counts.NotSubmitted, "unknown", counts.Unknown)
	if takenOver() {
		return
	}
	// Posted while the request is still submitting, so the housekeeping,
	// which retries the answers of submitted requests, cannot post them too.
	b.postResults(ctx, r, p, s.Wave, answers, "")
	if _, err := b.life.EndSend(ctx, s); err != nil {
		if !errors.Is(err, patch.ErrLost) {
			// Safe: the claim runs out and a takeover follows what was recorded.
			log.Error().Err(err).Msg("end the send of a wave")
		}
		return
	}
	if responseURL != "" {
		msg := fmt.Sprintf(":rocket: Request `%s` submitted: %d of %s accepted.", r.ID, len(jobIDs), plural(len(answers), "instance"))
		if counts.Unknown > 0 {
			msg += fmt.Sprintf(" For %d the outcome is unknown: the patch may have started, check the console before retrying.", counts.Unknown)
		}
		b.respondOrLog(ctx, responseURL, msg+" Follow it in the thread.")
	}
	// The counts, the next wave if one is due, and the final summary should
	// every job already have ended while we were still recording.
	b.refreshRequest(ctx, r.ID)
}

// errShuttingDown: the bot is stopping, so no new batch is sent.
var errShuttingDown = errors.New("shutting down")

// beginBatch records batch in flight under s, unless the bot is stopping
// (stopping ended); ctx is the context of the store write.
func (b *Bot) beginBatch(ctx, stopping context.Context, s *patch.Send, batch upgrade.Batch) error {
	if stopping.Err() != nil {
		return errShuttingDown
	}
	return b.life.BeginBatch(ctx, s, batch.InstanceIDs)
}

// unsentOf lists the instances of batches.
func unsentOf(batches []upgrade.Batch) []string {
	var ids []string
	for _, b := range batches {
		ids = append(ids, b.InstanceIDs...)
	}
	return ids
}

// postParent posts the channel message of a request's first wave and
// records its ts. When Slack refuses it, nothing was sent: the request is
// stopped with every instance not sent, and the requester is told.
func (b *Bot) postParent(ctx context.Context, log zerolog.Logger, r store.Request, p upgrade.Plan, s *patch.Send, responseURL string, a auditInfo) (string, bool) {
	view := b.parentView(r, p, nil)
	_, ts, err := b.api.PostMessageContext(ctx, r.Channel, slack.MsgOptionText(parentText(view), false), slack.MsgOptionBlocks(b.kitOf(b.targets.of(r)).parentBlocks(view)...))
	if err == nil {
		if _, err := b.st.Update(ctx, r.ID, func(x *store.Request) error { x.ParentTS = ts; return nil }); err != nil {
			// The thread replies of this process still go under ts; only a
			// process taking over would post them in the channel itself.
			log.Error().Err(err).Msg("store parent message ts")
		}
		return ts, true
	}
	log.Error().Err(err).Msg("post channel message; not patching")
	b.audit("not_submitted", a, "reason", "could not post in channel: "+slackErrorCode(err))
	// Nothing was sent: record it so, stop the rollout and finish it, so
	// that nothing is sent later and no summary is owed to a channel the
	// bot cannot post in.
	ro, _ := patch.RolloutOf(r)
	var all []string
	for _, w := range ro.Waves {
		all = append(all, w.InstanceIDs()...)
	}
	if err := b.life.EndBatch(ctx, s, answerAll(all, CodeNotSent, "Not sent: the bot could not post in this channel.")); err != nil {
		log.Error().Err(err).Msg("record the instances as not sent")
	}
	if _, err := b.life.Stop(ctx, r.ID, ""); err != nil {
		log.Error().Err(err).Msg("stop a request whose channel message could not be posted")
	}
	b.endSend(ctx, log, s)
	if _, err := b.st.Update(ctx, r.ID, func(x *store.Request) error { x.ResultsPending = false; return nil }); err != nil {
		log.Error().Err(err).Msg("clear the pending answers of a request that sent nothing")
	}
	if _, err := b.life.Finish(ctx, r.ID); err != nil {
		log.Error().Err(err).Msg("finish a request that sent nothing")
	}
	msg := fmt.Sprintf(":x: Nothing was patched: I could not post in this channel (`%s`). Invite the bot to the channel and run the command again.", esc(slackErrorCode(err)))
	b.respondOrLog(ctx, responseURL, msg)
	return "", false
}

// endSend ends s, logging (not failing) on error.
func (b *Bot) endSend(ctx context.Context, log zerolog.Logger, s *patch.Send) {
	if _, err := b.life.EndSend(ctx, s); err != nil && !errors.Is(err, patch.ErrLost) {
		log.Error().Err(err).Msg("end the send of a wave")
	}
}

// recheckWave looks the wave's instances up again right before they are
// sent: it returns the batches to send and a not-sent answer for each
// instance that no longer passes (changed since the plan, gone, or outside
// its window). When the lookup fails nothing of the wave is sent.
func (b *Bot) recheckWave(ctx context.Context, log zerolog.Logger, r store.Request, p upgrade.Plan, s *patch.Send) ([]upgrade.Batch, []upgrade.UpgradeResult) {
	ro, err := patch.RolloutOf(r)
	if err != nil || s.Wave >= len(ro.Waves) {
		log.Error().Err(err).Msg("read the wave to send")
		return nil, answerAll(unsentOf(s.Batches), CodeNotSent, "Not sent: the bot could not read its rollout.")
	}
	wave := ro.Waves[s.Wave]
	ids := wave.InstanceIDs()
	tg := b.targets.of(r)
	if tg == nil {
		return nil, answerAll(ids, CodeNotSent, "Not sent: the request's GeminiDB target is no longer configured; nothing was started.")
	}
	res, err := tg.DB.Resolve(ctx, ids)
	if err != nil {
		log.Error().Err(err).Msg("re-check a wave's instances; not sending it")
		return nil, answerAll(ids, CodeNotSent, "Not sent: the bot could not re-check this instance right before sending ("+b.userError(err, r.ID)+"). Nothing was started; use Retry on the summary.")
	}
	current := map[string]upgrade.Instance{}
	for _, id := range ids {
		if in, ok := res.Found[id]; ok {
			current[id] = in
		}
	}
	send, refused := patch.Recheck(p, wave, current, b.cfg.Now().UTC())
	var answers []upgrade.UpgradeResult
	for _, id := range ids {
		if why, ok := refused[id]; ok {
			answers = append(answers, upgrade.UpgradeResult{InstanceID: id, ErrorCode: CodeNotSent,
				ErrorMessage: "Not sent: it no longer passes the check it passed in the plan (" + why + "). Nothing was started."})
		}
	}
	return send, answers
}

// heartbeat renews the claim of s every third of its length until stop is
// closed; it closes lost if another process took the wave over.
func (b *Bot) heartbeat(ctx context.Context, log zerolog.Logger, s *patch.Send, stop <-chan struct{}, lost chan<- struct{}) {
	t := time.NewTicker(b.leaseFor() / 3)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			err := b.life.Renew(ctx, &s.Claim)
			if errors.Is(err, patch.ErrLost) {
				log.Error().Msg("another process took this wave over; stopping")
				close(lost)
				return
			}
			if err != nil {
				log.Warn().Err(err).Msg("renew the claim of a wave")
			}
		}
	}
}

// recoverWave takes over a wave whose sender stopped (its claim ran out: a
// crashed process, or a replica that died mid-send). Answers and jobs that
// were recorded carry on as usual; the batch in flight is unknown and the
// rest was never sent; none of it is sent again.
func (b *Bot) recoverWave(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), slackWriteTimeout)
	defer cancel()
	log := b.log.With().Str("request_id", id).Logger()
	r, s, err := b.life.Recover(ctx, id)
	if err != nil {
		if !errors.Is(err, patch.ErrHeld) && !errors.Is(err, store.ErrConflict) {
			log.Error().Err(err).Msg("take over a stalled wave; trying again later")
		}
		return
	}
	if s.Wave < 0 {
		b.endSend(ctx, log, s)
		return
	}
	rec := s.Recovered
	answers := slices.Clone(rec.Answers)
	answers = append(answers, answerAll(rec.Unknown, CodeUnknown, "The bot stopped while this batch call was in flight: the patch may have started. Check the console before retrying; the bot does not retry it.")...)
	answers = append(answers, answerAll(rec.Unsent, CodeNotSent, "The bot stopped before sending this batch, so nothing was started for this instance. Run the command again for it.")...)
	if err := b.life.EndBatch(ctx, s, answers); err != nil {
		log.Error().Err(err).Msg("record the answers of a stalled wave; trying again later")
		return
	}
	p, results, err := decode(mustGet(ctx, b, id, r))
	if err != nil {
		log.Error().Err(err).Msg("decode a recovered request")
	}
	log.Warn().Int("unknown", len(rec.Unknown)).Int("not_sent", len(rec.Unsent)).Int("wave", s.Wave).
		Msg("wave left submitting by a stopped process; recorded jobs are followed, the rest is not retried")
	b.audit("not_submitted", requestAudit(r, r.Requester, targetIDs(p)),
		"reason", "bot stopped while submitting", "unknown", len(rec.Unknown), "not_sent", len(rec.Unsent))
	note := fmt.Sprintf(":warning: The bot stopped while submitting request `%s`; these are the answers it had recorded.", r.ID)
	if len(rec.Unknown) > 0 {
		note += fmt.Sprintf(" For %d the batch call was in flight: the patch may have started, check the console before retrying (it is *not* retried).", len(rec.Unknown))
	}
	if r.ParentTS == "" {
		b.tell(ctx, r.Channel, r.Requester, note)
	}
	b.postResults(ctx, r, p, s.Wave, waveResults(results, s.Batches), note)
	b.endSend(ctx, log, s)
	b.refreshRequest(ctx, r.ID)
}

// mustGet reads request id again, or returns fallback when it cannot.
func mustGet(ctx context.Context, b *Bot, id string, fallback store.Request) store.Request {
	r, err := b.st.Get(ctx, id)
	if err != nil {
		return fallback
	}
	return r
}

// waveResults keeps the answers of the instances of batches.
func waveResults(results []upgrade.UpgradeResult, batches []upgrade.Batch) []upgrade.UpgradeResult {
	in := map[string]bool{}
	for _, id := range unsentOf(batches) {
		in[id] = true
	}
	var out []upgrade.UpgradeResult
	for _, r := range results {
		if in[r.InstanceID] {
			out = append(out, r)
		}
	}
	return out
}

// waveSummary describes a rollout's waves for the plan, e.g. "canary: 1,
// then 9" or "3 scheduled for 02:00-06:00 UTC, opens in 5h12m".
func waveSummary(ro patch.Rollout, now time.Time) []string {
	var lines []string
	for k, w := range ro.Waves {
		n := len(w.InstanceIDs())
		var line string
		switch w.Kind {
		case patch.KindCanary:
			line = fmt.Sprintf("wave %d, canary: %s first", k+1, plural(n, "instance"))
		case patch.KindWindow:
			line = fmt.Sprintf("wave %d: %s scheduled for %s UTC, opens in %s", k+1, plural(n, "instance"), w.Window, w.Opens.Sub(now).Round(time.Minute))
		default:
			line = fmt.Sprintf("wave %d: %s", k+1, plural(n, "instance"))
			if k > 0 && ro.Waves[0].Kind == patch.KindCanary {
				line += " once every canary job completed"
			}
		}
		switch {
		case !w.Ended.IsZero():
			line += " — sent"
		case !w.Started.IsZero():
			line += " — sending"
		case ro.Stopped != nil:
			line += " — not sent (stopped)"
		}
		lines = append(lines, line)
	}
	return lines
}

// rolloutText is waveSummary as one line for the plan: "" for a plain
// rollout of one wave.
func rolloutText(ro patch.Rollout, now time.Time) string {
	if len(ro.Waves) < 2 && (len(ro.Waves) == 0 || ro.Waves[0].Kind != patch.KindWindow) {
		return ""
	}
	return "Rollout: " + strings.Join(waveSummary(ro, now), "; ") + "."
}
