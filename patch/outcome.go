package patch

import (
	"context"
	"errors"
	"fmt"

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
// failed as a whole: the cloud's code and message for an HTTP error
// (nothing started), CodeNotSent when the call certainly never left the
// bot, and CodeUnknown otherwise (it may have reached GeminiDB).
func Classify(err error) (code, msg string) {
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

// callBatch makes one batch call of site (never retried: it starts real
// upgrades). A whole-call failure becomes one answer per instance
// (Classify); an instance the answer left out is unknown, not patched.
func (rn *Runner) callBatch(ctx context.Context, log zerolog.Logger, site Site, ok bool, batch upgrade.Batch) []upgrade.UpgradeResult {
	if !ok || site.Cloud == nil {
		return answerAll(batch.InstanceIDs, CodeNotSent, "Not sent: the request's GeminiDB target is no longer configured; nothing was started.")
	}
	cctx, cancel := context.WithTimeout(ctx, rn.opts.BatchTimeout)
	defer cancel()
	res, err := site.Cloud.BatchUpgrade(cctx, batch.InstanceIDs)
	if err != nil {
		rn.opts.Metrics.BatchCalled(site.Name, "error")
		code, msg := Classify(err)
		log.Error().Err(err).Strs("instance_ids", batch.InstanceIDs).Str("error_code", code).Msg("batch upgrade call failed")
		return answerAll(batch.InstanceIDs, code, msg)
	}
	rn.opts.Metrics.BatchCalled(site.Name, "ok")
	// One result per requested instance, in the order asked.
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

// VersionOf is the version an instance reports: its whole version if
// known, else its version.
func VersionOf(i upgrade.Instance) string {
	if i.WholeVersion != "" {
		return i.WholeVersion
	}
	return i.Version
}
