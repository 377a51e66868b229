package bot

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	"github.com/slack-go/slack"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// leaseFor is how long a wave's submission claim lasts unrenewed: one
// batch call and the writes around it.
func (b *Bot) leaseFor() time.Duration { return b.cfg.BatchTimeout + time.Minute }

// postResults puts the batch answers in the request's thread, part by part,
// skipping the parts a previous try posted; once all are out the request's
// answers are no longer pending. A part Slack refuses is tried again on a
// later tick (finishQuietRequests). It reports whether all parts are out.
func (b *Bot) postResults(ctx context.Context, r store.Request, p upgrade.Plan, wave int, results []upgrade.UpgradeResult, note string) bool {
	c := countJobs(results, nil)
	title := fmt.Sprintf("*Batch results* (%d submitted%s)", len(results)-c.NotSubmitted-c.Unknown, c.batchTail())
	if wave > 0 {
		title = fmt.Sprintf("*Batch results of wave %d* (%d submitted%s)", wave+1, len(results)-c.NotSubmitted-c.Unknown, c.batchTail())
	}
	title = titled(title, b.targets.labelOf(r))
	if note != "" {
		title = note + "\n" + title
	}
	if !b.postParts(ctx, r, resultsKey(wave), "Batch results", messages(title, b.kitOf(b.targets.of(r)).resultLines(p, results))) {
		return false
	}
	if _, err := b.st.Update(ctx, r.ID, func(x *store.Request) error { x.ResultsPending = false; return nil }); err != nil {
		// Safe: the next tick finds every part posted and tries again.
		b.log.Error().Err(err).Str("request_id", r.ID).Msg("record that the batch answers are posted")
		return false
	}
	return true
}

// resultsKey is the report key (Request.Posted) of wave k's answers.
func resultsKey(k int) string {
	if k <= 0 {
		return "results"
	}
	return fmt.Sprintf("results-%d", k)
}

// postParts posts the thread messages of one report (key "results" or
// "summary"), from the first one not yet recorded as posted, recording each
// as it goes out. It reports whether every part is out.
func (b *Bot) postParts(ctx context.Context, r store.Request, key, text string, parts [][]slack.Block) bool {
	for i := r.Posted[key]; i < len(parts); i++ {
		if !b.postThread(ctx, r.Channel, r.ParentTS, text, parts[i]) {
			return false
		}
		if _, err := b.st.Update(ctx, r.ID, func(x *store.Request) error {
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

// answerAll gives every instance the same answer.
func answerAll(ids []string, code, msg string) []upgrade.UpgradeResult {
	out := make([]upgrade.UpgradeResult, len(ids))
	for i, id := range ids {
		out[i] = upgrade.UpgradeResult{InstanceID: id, ErrorCode: code, ErrorMessage: msg}
	}
	return out
}

// callBatch makes one batch call. A whole-call failure becomes one answer
// per instance: the cloud's code and message for an HTTP error (nothing
// started), NOT_SENT when the call certainly never left the bot, and
// UNKNOWN otherwise (it may have reached GeminiDB).
func (b *Bot) callBatch(ctx context.Context, tg *target, log zerolog.Logger, batch upgrade.Batch) []upgrade.UpgradeResult {
	if tg == nil {
		return answerAll(batch.InstanceIDs, CodeNotSent, "Not sent: the request's GeminiDB target is no longer configured; nothing was started.")
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
