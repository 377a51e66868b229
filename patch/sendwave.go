package patch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// PlanOf reads the plan and the batch answers stored on r.
func PlanOf(r store.Request) (upgrade.Plan, []upgrade.UpgradeResult, error) {
	var p upgrade.Plan
	var results []upgrade.UpgradeResult
	if len(r.Plan) > 0 {
		if err := json.Unmarshal(r.Plan, &p); err != nil {
			return p, nil, fmt.Errorf("decode plan of %s: %w", r.ID, err)
		}
	}
	if len(r.Results) > 0 {
		if err := json.Unmarshal(r.Results, &results); err != nil {
			return p, nil, fmt.Errorf("decode batch answers of %s: %w", r.ID, err)
		}
	}
	return p, results, nil
}

// goSend sends the wave s holds in its own goroutine, so a long submission
// never holds up whoever won it (a click's worker, a tick). Wait waits for
// it.
func (rn *Runner) goSend(ctx context.Context, r store.Request, s *Send, reply string) {
	// The send outlives whatever started it (a click, a tick's short write
	// context): only the end of Follow's context stops its batches.
	if base := rn.base.Load(); base != nil {
		ctx = *base
	} else {
		ctx = context.WithoutCancel(ctx) // not following: nothing to stop it
	}
	rn.inflight.Add(1)
	rn.busy.Add(1)
	go func() {
		defer rn.inflight.Done()
		defer rn.busy.Add(-1)
		rn.safely(func() { rn.sendWave(ctx, r, s, reply) })
	}()
}

// sendWave is run only by the holder of s, the right to send one wave of
// request r (won by Confirm, Approve or SendWave): the whole protocol. It
// announces the request (first wave), re-checks the wave's instances
// (Recheck), and per batch: BeginBatch, the batch call (never retried),
// PutJob for every job started, EndBatch; it posts the answers and ends
// the send (EndSend), renewing the claim all along (heartbeat).
//
// A wave's instances will be locked here, in the swap that claims it (the
// seam for instance locks).
func (rn *Runner) sendWave(ctx context.Context, r store.Request, s *Send, reply string) {
	// A batch call in flight and its recording finish even when the engine
	// is asked to stop: a half-recorded submission is the one thing that
	// cannot be repaired later. Batches not yet sent are not sent.
	stopping := ctx
	ctx = context.WithoutCancel(ctx)
	log := rn.log.With().Str("request_id", r.ID).Str("user", r.Requester).Str("channel", r.Channel).Int("wave", s.Wave).Logger()
	p, _, err := PlanOf(r)
	if err != nil {
		log.Error().Err(err).Msg("decode the plan of a wave; not sending it")
		rn.endSend(ctx, log, s) // a takeover reports it all as not sent
		return
	}
	if r.ParentTS == "" {
		ts, ok := rn.announce(ctx, log, r, s, reply)
		if !ok {
			return
		}
		r.ParentTS = ts
	}
	if s.Wave < 0 {
		// Every window is closed: the waves go later (Tick sends each
		// when it is due); the channel message shows the schedule.
		rn.endSend(ctx, log, s)
		rn.refresh(ctx, r.ID)
		rn.rep.Sent(ctx, SendReport{Request: r, Wave: -1, Reply: reply, Ended: true})
		return
	}

	// Keep the claim alive for the whole send, reporting included.
	stopBeat, lost := make(chan struct{}), make(chan struct{})
	defer close(stopBeat)
	go rn.heartbeat(ctx, log, s, stopBeat, lost)
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
	site, siteOK := rn.opts.Fleet.SiteOf(r)
	batches, answers := rn.recheckWave(ctx, log, r, p, s, site, siteOK)
	// Instances another request patches are never sent by this one.
	batches = withoutLocked(batches, s.Locked)
	answers = slices.DeleteFunc(answers, func(a upgrade.UpgradeResult) bool { _, ok := s.Locked[a.InstanceID]; return ok })
	answers = append(answers, rn.lockedAnswers(ctx, s.Locked)...)
	if len(answers) > 0 {
		if err := rn.life.EndBatch(ctx, s, answers); err != nil {
			if errors.Is(err, ErrLost) {
				return
			}
			log.Error().Err(err).Msg("record the instances the re-check refused")
		} else {
			rn.releaseAnswered(ctx, r, answers)
		}
	}
	var jobIDs []string
	var unexpected []upgrade.UpgradeResult
	report := func(answers []upgrade.UpgradeResult, jobIDs []string, unexpected []upgrade.UpgradeResult) SendReport {
		return SendReport{Request: r, Wave: s.Wave, Reply: reply, Answers: answers, JobIDs: jobIDs, Unexpected: unexpected}
	}
	for i, batch := range batches {
		var extra []upgrade.UpgradeResult
		if takenOver() {
			return // the process that took over reports; nothing more is said here
		}
		var got []upgrade.UpgradeResult
		// A batch is only sent under a freshly renewed claim that also
		// names it in flight, so no other process can take it over while
		// it is, and one that takes over later knows it may have started.
		switch err := rn.beginBatch(ctx, stopping, s, batch); {
		case errors.Is(err, ErrLost):
			log.Error().Msg("another process took this wave over; stopping")
			return
		case errors.Is(err, ErrUnrecorded):
			log.Error().Msg("a batch is still recorded in flight; sending nothing more (a takeover reports it)")
			return
		case errors.Is(err, ErrStopped):
			got = answerAll(unsentOf(batches[i:]), CodeNotSent, "Not sent: the rollout was stopped before this batch; nothing was started for this instance.")
		case errors.Is(err, errShuttingDown):
			got = answerAll(unsentOf(batches[i:]), CodeNotSent, "The bot was shutting down before sending this batch, so nothing was started for this instance. Run the command again for it.")
		case err != nil:
			log.Error().Err(err).Msg("record the batch in flight; not sending it")
			got = answerAll(unsentOf(batches[i:]), CodeNotSent, "The bot could not record its progress (its store did not answer), so to stay safe this batch was not sent; nothing was started for this instance. Run the command again for it.")
		default:
			ba := rn.callBatch(ctx, log, site, siteOK, batch)
			got, unexpected = ba.Answers, append(unexpected, ba.Unexpected...)
			// Every further job an answer names was started: follow it too.
			extra = append(extra, ba.ExtraJobs...)
			for _, u := range ba.Unexpected {
				if u.JobID != "" {
					extra = append(extra, u)
				}
			}
		}
		// Record each batch's answers at once: should the process die before
		// the next batch, what was started is still followed after a restart.
		now := rn.opts.Now()
		for k, res := range append(slices.Clone(got), extra...) {
			if !res.Submitted() {
				continue
			}
			in := versions[res.InstanceID]
			j := store.Job{ID: res.JobID, RequestID: r.ID, InstanceID: res.InstanceID, InstanceName: in.Name,
				VersionBefore: VersionOf(in), SubmittedAt: now}
			if err := rn.st.PutJob(ctx, j); err != nil {
				// The answer below still records the job ID, so the
				// thread names it; only its end will not be followed.
				log.Error().Err(err).Str("job_id", j.ID).Msg("store job")
			}
			if k < len(got) { // the extra jobs are followed, not counted as instances accepted
				jobIDs = append(jobIDs, res.JobID)
			}
		}
		answers = append(answers, got...)
		if err := rn.recordBatch(ctx, s, got); err != nil {
			if errors.Is(err, ErrLost) {
				return
			}
			// Unrecorded: no further batch goes, and the batch stays named
			// in flight, so the takeover once the claim runs out reports it
			// (its recorded jobs followed, the rest unknown) and the
			// batches not sent as not sent: never "nothing was started".
			log.Error().Err(err).Int("not_sent", len(unsentOf(batches[i+1:]))).
				Msg("could not record a batch's answers; sending no further batch")
			rn.rep.Sent(ctx, report(answers, jobIDs, unexpected))
			return
		}
		rn.releaseAnswered(ctx, r, got)
		if len(got) > len(batch.InstanceIDs) {
			break // the rest was answered as not sent at once
		}
	}
	final := report(answers, jobIDs, unexpected)
	if takenOver() {
		rn.rep.Sent(ctx, final)
		return
	}
	// Posted while the request is still submitting, so that Tick, which
	// posts the answers of submitted requests, cannot post them too.
	rn.postResults(ctx, r, s.Wave, answers, nil)
	if _, err := rn.life.EndSend(ctx, s); err != nil {
		if !errors.Is(err, ErrLost) {
			// Safe: the claim runs out and a takeover follows what was recorded.
			log.Error().Err(err).Msg("end the send of a wave")
		}
		rn.rep.Sent(ctx, final)
		return
	}
	final.Ended = true
	rn.rep.Sent(ctx, final)
	// The counts, the next wave if one is due, and the final summary should
	// every job already have ended while the answers were recorded.
	rn.refresh(ctx, r.ID)
}

// postResults has the answers of wave k of r posted; once they are all
// out, the request's answers are no longer pending.
func (rn *Runner) postResults(ctx context.Context, r store.Request, wave int, answers []upgrade.UpgradeResult, rec *Recovery) bool {
	if !rn.rep.Results(ctx, r, wave, answers, rec) {
		return false
	}
	if _, err := rn.life.ResultsPosted(ctx, r.ID); err != nil {
		// Safe: the next tick finds every part posted and tries again.
		rn.log.Error().Err(err).Str("request_id", r.ID).Msg("record that the batch answers are posted")
		return false
	}
	return true
}

// errShuttingDown: the engine is stopping, so no new batch is sent.
var errShuttingDown = errors.New("shutting down")

// beginBatch records batch in flight under s, unless the engine is stopping.
func (rn *Runner) beginBatch(ctx, stopping context.Context, s *Send, batch upgrade.Batch) error {
	if stopping.Err() != nil {
		return errShuttingDown
	}
	return rn.life.BeginBatch(ctx, s, batch.InstanceIDs)
}

// unsentOf lists the instances of batches.
func unsentOf(batches []upgrade.Batch) []string {
	var ids []string
	for _, b := range batches {
		ids = append(ids, b.InstanceIDs...)
	}
	return ids
}

// announce has the channel message of a request's first wave posted and
// records its ts. When it cannot be posted nothing was sent: the request
// is stopped with every instance not sent, and finished.
func (rn *Runner) announce(ctx context.Context, log zerolog.Logger, r store.Request, s *Send, reply string) (string, bool) {
	ts, err := rn.rep.Announce(ctx, r)
	if err == nil {
		if _, err := rn.life.Note(ctx, r.ID, func(x *store.Request) { x.ParentTS = ts }); err != nil {
			// The thread replies of this process still go under ts; only a
			// process taking over would post them in the channel itself.
			log.Error().Err(err).Msg("store parent message ts")
		}
		return ts, true
	}
	log.Error().Err(err).Msg("post channel message; not patching")
	// Nothing was sent: record it so, stop the rollout and finish it, so
	// that nothing is sent later and no summary is owed to a channel that
	// cannot be posted in.
	ro, _ := RolloutOf(r)
	var all []string
	for _, w := range ro.Waves {
		all = append(all, w.InstanceIDs()...)
	}
	if err := rn.life.EndBatch(ctx, s, answerAll(all, CodeNotSent, "Not sent: the bot could not post in this channel.")); err != nil {
		log.Error().Err(err).Msg("record the instances as not sent")
	}
	if _, err := rn.life.Stop(ctx, r.ID, ""); err != nil {
		log.Error().Err(err).Msg("stop a request whose channel message could not be posted")
	}
	rn.endSend(ctx, log, s)
	if _, err := rn.life.ResultsPosted(ctx, r.ID); err != nil {
		log.Error().Err(err).Msg("clear the pending answers of a request that sent nothing")
	}
	if _, err := rn.life.Finish(ctx, r.ID); err != nil {
		log.Error().Err(err).Msg("finish a request that sent nothing")
	}
	rn.rep.Sent(ctx, SendReport{Request: r, Wave: s.Wave, Reply: reply, NotAnnounced: err})
	return "", false
}

// endSend ends s, logging (not failing) on error.
func (rn *Runner) endSend(ctx context.Context, log zerolog.Logger, s *Send) {
	if _, err := rn.life.EndSend(ctx, s); err != nil && !errors.Is(err, ErrLost) {
		log.Error().Err(err).Msg("end the send of a wave")
	}
}

// recheckWave looks the wave's instances up again right before they are
// sent: it returns the batches to send and a not-sent answer for each
// instance that no longer passes (changed since the plan, gone, or outside
// its window). When the lookup fails nothing of the wave is sent.
func (rn *Runner) recheckWave(ctx context.Context, log zerolog.Logger, r store.Request, p upgrade.Plan, s *Send, site Site, ok bool) ([]upgrade.Batch, []upgrade.UpgradeResult) {
	ro, err := RolloutOf(r)
	if err != nil || s.Wave >= len(ro.Waves) {
		log.Error().Err(err).Msg("read the wave to send")
		return nil, answerAll(unsentOf(s.Batches), CodeNotSent, "Not sent: the bot could not read its rollout.")
	}
	wave := ro.Waves[s.Wave]
	ids := wave.InstanceIDs()
	if !ok || site.Cloud == nil {
		return nil, answerAll(ids, CodeNotSent, "Not sent: the request's GeminiDB target is no longer configured; nothing was started.")
	}
	res, err := site.Cloud.Resolve(ctx, ids)
	if err != nil {
		log.Error().Err(err).Msg("re-check a wave's instances; not sending it")
		return nil, answerAll(ids, CodeNotSent, "Not sent: the bot could not re-check this instance right before sending ("+rn.opts.Explain(err, r.ID)+"). Nothing was started; use Retry on the summary.")
	}
	current := map[string]upgrade.Instance{}
	for _, id := range ids {
		if in, ok := res.Found[id]; ok {
			current[id] = in
		}
	}
	send, refused := Recheck(p, wave, current, rn.opts.Now().UTC())
	planned := map[string]upgrade.Instance{}
	for _, t := range p.Targets {
		planned[t.Instance.ID] = t.Instance
	}
	var answers []upgrade.UpgradeResult
	for _, id := range ids {
		why, ok := refused[id]
		if !ok {
			continue
		}
		if in, found := current[id]; found && (in.Upgrading() || VersionOf(in) != VersionOf(planned[id])) {
			// After a store failover lost the record of a batch this
			// request sent, its own upgrade looks just like this: never
			// say that nothing was started.
			answers = append(answers, upgrade.UpgradeResult{InstanceID: id, ErrorCode: CodeUnknown,
				ErrorMessage: "Not sent again: an upgrade is in progress (possibly this request's): the instance shows an upgrade or a version other than the plan's (" + why + "). Check the console before retrying."})
			continue
		}
		answers = append(answers, upgrade.UpgradeResult{InstanceID: id, ErrorCode: CodeNotSent,
			ErrorMessage: "Not sent: it no longer passes the check it passed in the plan (" + why + "). Nothing was started."})
	}
	return send, answers
}

// heartbeat renews the claim of s every third of its length until stop is
// closed; it closes lost if another process took the wave over.
func (rn *Runner) heartbeat(ctx context.Context, log zerolog.Logger, s *Send, stop <-chan struct{}, lost chan<- struct{}) {
	t := time.NewTicker(rn.Lease() / 3)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			err := rn.life.Renew(ctx, &s.Claim)
			if errors.Is(err, ErrLost) {
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
func (rn *Runner) recoverWave(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	log := rn.log.With().Str("request_id", id).Logger()
	r, s, err := rn.life.Recover(ctx, id)
	if err != nil {
		if !errors.Is(err, ErrHeld) && !errors.Is(err, store.ErrConflict) {
			log.Error().Err(err).Msg("take over a stalled wave; trying again later")
		}
		return
	}
	if s.Wave < 0 {
		rn.endSend(ctx, log, s)
		return
	}
	rec := s.Recovered
	answers := slices.Clone(rec.Answers)
	answers = append(answers, answerAll(rec.Unknown, CodeUnknown, "The bot stopped while this batch call was in flight: the patch may have started. Check the console before retrying; the bot does not retry it.")...)
	answers = append(answers, answerAll(rec.Unsent, CodeNotSent, "The bot stopped before sending this batch, so nothing was started for this instance. Run the command again for it.")...)
	if err := rn.life.EndBatch(ctx, s, answers); err != nil {
		log.Error().Err(err).Msg("record the answers of a stalled wave; trying again later")
		return
	}
	if cur, err := rn.st.Get(ctx, id); err == nil {
		r = cur
	}
	_, results, err := PlanOf(r)
	if err != nil {
		log.Error().Err(err).Msg("decode a recovered request")
	}
	log.Warn().Int("unknown", len(rec.Unknown)).Int("not_sent", len(rec.Unsent)).Int("wave", s.Wave).
		Msg("wave left submitting by a stopped process; recorded jobs are followed, the rest is not retried")
	waveAnswers := waveResults(results, s.Batches)
	rn.postResults(ctx, r, s.Wave, waveAnswers, rec)
	rn.endSend(ctx, log, s)
	rn.rep.Sent(ctx, SendReport{Request: r, Wave: s.Wave, Answers: waveAnswers, Recovered: rec, Ended: true})
	rn.refresh(ctx, r.ID)
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
