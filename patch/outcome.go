package patch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// The engine's own error codes for an instance's batch answer; any other
// code is the cloud's answer (refused: nothing started).
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

// UnknownOutcome tells whether a batch answer leaves open whether the
// patch started: never counted as "not submitted", never retried.
func UnknownOutcome(r upgrade.UpgradeResult) bool { return !r.Submitted() && unknownCodes[r.ErrorCode] }

// answerAll gives every instance the same answer.
func answerAll(ids []string, code, msg string) []upgrade.UpgradeResult {
	out := make([]upgrade.UpgradeResult, len(ids))
	for i, id := range ids {
		out[i] = upgrade.UpgradeResult{InstanceID: id, ErrorCode: code, ErrorMessage: msg}
	}
	return out
}

// Classify is the answer recorded for every instance of a batch call that
// failed as a whole, as upgrade.Classify tells it: the cloud's code and
// message for a refusal (an HTTP 4xx with GeminiDB's code: nothing
// started), CodeNotSent when the call certainly never left the bot, and
// CodeUnknown otherwise (a 5xx, an API gateway code such as APIG.0201, a
// timeout, a reset: it may have reached GeminiDB), with the code and
// message of the answer in the text.
func Classify(err error) (code, msg string) {
	f := upgrade.Classify(err)
	if backoff, ok := errors.AsType[*upgrade.AuthBackoffError](err); ok {
		// Refused by the client itself, before any call.
		f.Outcome, f.Backoff, f.Code = upgrade.OutcomeNotSent, backoff, backoff.Err.Code
	}
	switch {
	case f.Outcome == upgrade.OutcomeNotSent && f.Backoff != nil:
		return CodeNotSent, "Not sent: GeminiDB refused the bot's credentials a moment ago (" + f.Code + "), so the bot waits before trying them again; nothing was started. Fix the credentials, then run the command again."
	case f.Outcome == upgrade.OutcomeNotSent:
		return CodeNotSent, "Not sent: the batch call never reached GeminiDB (" + f.Message + "); nothing was started. Run the command again for it."
	case f.Outcome == upgrade.OutcomeRefused:
		return f.Code, f.Message
	case f.Redirect != nil:
		return CodeUnknown, fmt.Sprintf("GeminiDB answered the batch call with a redirect (HTTP %d to %s), which the bot never follows: check GEMINIDB_ENDPOINT, and check the console before retrying (the patch may have started).", f.Redirect.Status, f.Redirect.Host)
	case f.Status != 0:
		what := fmt.Sprintf("HTTP %d", f.Status)
		if f.Code != "" && f.Code != what {
			what += " " + f.Code
		}
		return CodeUnknown, "GeminiDB answered the batch call with " + what + " (" + f.Message + "): the request reached GeminiDB and the patch may have started. Check the console before retrying; the bot does not retry it."
	case errors.Is(err, context.DeadlineExceeded):
		return CodeUnknown, "GeminiDB did not answer the batch call in time: the patch may have started. Check the console before retrying."
	default:
		return CodeUnknown, "The connection to GeminiDB failed during the batch call (" + f.Message + "): the patch may have started. Check the console before retrying."
	}
}

// batchAnswer is what one batch call answered, reconciled with what was
// sent (upgrade.Reconcile): one answer per instance sent, the further jobs
// started for them, and the rows for instances that were not sent.
type batchAnswer struct {
	Answers    []upgrade.UpgradeResult
	ExtraJobs  []upgrade.UpgradeResult
	Unexpected []upgrade.UpgradeResult
}

// callBatch makes one batch call of site (never retried: it starts real
// upgrades). A whole-call failure becomes one answer per instance
// (Classify). A 202 goes through upgrade.Reconcile: any row with a job_id
// wins for its instance, every further job is kept (ExtraJobs), an
// instance the answer left out is unknown, and rows for instances not
// sent are logged as errors and kept (Unexpected) to be named.
func (rn *Runner) callBatch(ctx context.Context, log zerolog.Logger, site Site, ok bool, batch upgrade.Batch) batchAnswer {
	if !ok || site.Cloud == nil {
		return batchAnswer{Answers: answerAll(batch.InstanceIDs, CodeNotSent, "Not sent: the request's GeminiDB target is no longer configured; nothing was started.")}
	}
	cctx, cancel := context.WithTimeout(ctx, rn.opts.BatchTimeout)
	defer cancel()
	res, err := site.Cloud.BatchUpgrade(cctx, batch.InstanceIDs)
	if err != nil {
		rn.opts.Metrics.BatchCalled(site.Name, "error")
		code, msg := Classify(err)
		log.Error().Err(err).Strs("instance_ids", batch.InstanceIDs).Str("error_code", code).Msg("batch upgrade call failed")
		return batchAnswer{Answers: answerAll(batch.InstanceIDs, code, msg)}
	}
	rn.opts.Metrics.BatchCalled(site.Name, "ok")
	a := upgrade.Reconcile(batch.InstanceIDs, res)
	out := batchAnswer{Answers: a.Results, ExtraJobs: a.ExtraJobs, Unexpected: a.Unexpected}
	for i, r := range out.Answers {
		if slices.Contains(a.Missing, r.InstanceID) {
			out.Answers[i] = upgrade.UpgradeResult{InstanceID: r.InstanceID, ErrorCode: CodeUnknown, ErrorMessage: "The batch call was answered but named no result for this instance: the patch may have started. Check the console before retrying."}
		}
	}
	for _, u := range a.Unexpected {
		log.Error().Str("instance_id", u.InstanceID).Str("job_id", u.JobID).Str("error_code", u.ErrorCode).
			Strs("instance_ids", batch.InstanceIDs).Msg("the batch answer has a row for an instance that was not sent")
	}
	if len(a.ExtraJobs) > 0 {
		log.Warn().Int("extra_jobs", len(a.ExtraJobs)).Msg("the batch answer started more than one job for an instance; following every one")
	}
	return out
}

// VersionOf is the version an instance reports: its whole version if
// known, else its version.
func VersionOf(i upgrade.Instance) string {
	if i.WholeVersion != "" {
		return i.WholeVersion
	}
	return i.Version
}

// recordTries and recordBackoff bound how hard recordBatch tries to record
// a batch's answers before the wave is given up.
const (
	recordTries   = 4
	recordBackoff = 100 * time.Millisecond
)

// recordBatch records a batch's answers (EndBatch), trying again a few
// times with a short backoff: a store blip must not leave what a batch
// started unrecorded. A lost claim (ErrLost) is not retried.
func (rn *Runner) recordBatch(ctx context.Context, s *Send, got []upgrade.UpgradeResult) error {
	var err error
	wait := recordBackoff
	for try := 1; ; try++ {
		if err = rn.life.EndBatch(ctx, s, got); err == nil || errors.Is(err, ErrLost) || try == recordTries {
			return err
		}
		rn.log.Warn().Err(err).Str("request_id", s.RequestID).Int("try", try).Msg("record batch answers; trying again")
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(wait):
		}
		wait *= 2
	}
}
