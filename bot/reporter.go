package bot

import (
	"context"
	"fmt"
	"strings"

	"github.com/slack-go/slack"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/patch"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// reporter is the bot's patch.Reporter: it says in Slack what the engine
// did, and audits it. (The outbox that posts within Slack's limits will
// sit here.)
type reporter struct{ b *Bot }

var _ patch.Reporter = reporter{}

// Decided answers a decision in the messages that carried its buttons.
func (rp reporter) Decided(ctx context.Context, d patch.Decision) {
	b, r := rp.b, d.Request
	p, _, _ := patch.PlanOf(r)
	a := requestAudit(r, d.By, targetIDs(p))
	switch d.Verb {
	case patch.VerbConfirm:
		if d.Err != nil {
			msg := fmt.Sprintf("I could not post the approval request in this channel (%s); nothing was done. Is the bot a member of the channel?", esc(slackErrorCode(d.Err)))
			if err := b.respond(ctx, d.Reply, false, msg, nil); err != nil {
				b.tell(ctx, r.Channel, d.By, msg) // the response_url may have expired
			}
			return
		}
		if r.State != store.AwaitingApproval {
			b.audit("confirmed", a)
			return
		}
		approvers := b.approversOf(r)
		b.audit("approval_requested", a, "approvers", approvers)
		b.respondOrLog(ctx, d.Reply, fmt.Sprintf(":raised_hand: Plan `%s` is waiting for approval by %s. Nothing is patched until an approver approves.", r.ID, mentionList(approvers)))
	case patch.VerbApprove:
		b.audit("approved", a, "requester", r.Requester)
		msg := fmt.Sprintf(":white_check_mark: <@%s> approved <@%s>'s request `%s` to patch %s.", d.By, r.Requester, r.ID, plural(len(p.Targets), "instance"))
		b.updateMessage(ctx, r.Channel, r.ApprovalTS, msg, noticeBlocks(msg))
	case patch.VerbReject:
		b.audit("rejected", a, "requester", r.Requester)
		msg := fmt.Sprintf(":no_entry: <@%s> rejected <@%s>'s request `%s`; nothing was patched.", d.By, r.Requester, r.ID)
		b.updateMessage(ctx, r.Channel, r.ApprovalTS, msg, noticeBlocks(msg))
		b.tell(ctx, r.Channel, r.Requester, fmt.Sprintf("Your patch request `%s` was rejected by <@%s>; nothing was patched.", r.ID, d.By))
		b.respondOrLog(ctx, d.Reply, msg)
	case patch.VerbCancel:
		b.audit("cancelled", a)
		msg := fmt.Sprintf(":no_entry_sign: Plan `%s` cancelled; nothing was patched.", r.ID)
		b.respondOrLog(ctx, d.Reply, msg)
		if r.ApprovalTS != "" {
			b.updateMessage(ctx, r.Channel, r.ApprovalTS, msg, noticeBlocks(msg))
		}
	case patch.VerbContinue:
		b.audit("continued", a)
		b.postThread(ctx, r.Channel, r.ParentTS, "Continued", noticeBlocks(fmt.Sprintf(":arrow_forward: <@%s> continued request `%s`: the instances not sent yet go out now (each wave in its window).", d.By, r.ID)))
	case patch.VerbStop:
		rp.stopped(ctx, r, p, d.By, a)
	}
}

// stopped says in the thread that r was stopped, and what was not sent.
func (rp reporter) stopped(ctx context.Context, r store.Request, p upgrade.Plan, by string, a auditInfo) {
	b := rp.b
	ro, _ := patch.RolloutOf(r)
	unsent := ro.Unsent()
	b.audit("stopped", a, "not_sent", unsent)
	msg := fmt.Sprintf(":octagonal_sign: <@%s> stopped request `%s`: nothing more is sent. Jobs already started run to their end and are still followed.", by, r.ID)
	if r.State == store.Submitting {
		msg += " The batch call in flight finishes; no further batch is sent."
	}
	if len(unsent) > 0 {
		names := instanceNames(p)
		for _, s := range p.Skipped {
			if s.Instance != nil {
				names[s.Instance.ID] = s.Instance.Name
			}
		}
		lines := make([]string, len(unsent))
		for i, id := range unsent {
			lines[i] = fmt.Sprintf("• *%s* `%s`", esc(names[id]), esc(id))
		}
		msg += fmt.Sprintf("\nNot sent (%d):\n%s", len(unsent), strings.Join(lines, "\n"))
	}
	for _, blocks := range messages("", strings.Split(msg, "\n")) {
		b.postThread(ctx, r.Channel, r.ParentTS, "Stopped", blocks)
	}
}

// AskApproval posts the approval request in the request's channel.
func (rp reporter) AskApproval(ctx context.Context, r store.Request) (string, error) {
	b := rp.b
	p, _, _ := patch.PlanOf(r)
	_, ts, err := b.api.PostMessageContext(ctx, r.Channel,
		slack.MsgOptionText(fmt.Sprintf("<@%s> asks for approval to patch %s (request %s)", r.Requester, plural(len(p.Targets), "GeminiDB instance"), r.ID), false),
		slack.MsgOptionBlocks(fit(withTarget(b.kitOf(b.targets.of(r)).approvalBlocks(r, p, b.approversOf(r)), b.targets.labelOf(r)), maxMessageText, "")...))
	if err != nil {
		return "", fmt.Errorf("post approval request: %w", err)
	}
	return ts, nil
}

// Announce posts the channel message of a request's first wave.
func (rp reporter) Announce(ctx context.Context, r store.Request) (string, error) {
	b := rp.b
	p, _, _ := patch.PlanOf(r)
	view := b.parentView(r, p, nil)
	_, ts, err := b.api.PostMessageContext(ctx, r.Channel, slack.MsgOptionText(parentText(view), false), slack.MsgOptionBlocks(fit(b.kitOf(b.targets.of(r)).parentBlocks(view), maxMessageText, "")...))
	if err != nil {
		return "", fmt.Errorf("post channel message: %w", err)
	}
	return ts, nil
}

// Results puts the batch answers in the request's thread, part by part,
// skipping the parts a previous try posted.
func (rp reporter) Results(ctx context.Context, r store.Request, wave int, results []upgrade.UpgradeResult, rec *patch.Recovery) bool {
	b := rp.b
	p, _, _ := patch.PlanOf(r)
	c := countJobs(results, nil)
	title := fmt.Sprintf("*Batch results* (%d submitted%s)", len(results)-c.NotSubmitted-c.Unknown, c.batchTail())
	if wave > 0 {
		title = fmt.Sprintf("*Batch results of wave %d* (%d submitted%s)", wave+1, len(results)-c.NotSubmitted-c.Unknown, c.batchTail())
	}
	title = titled(title, b.targets.labelOf(r))
	if rec != nil {
		note := fmt.Sprintf(":warning: The bot stopped while submitting request `%s`; these are the answers it had recorded.", r.ID)
		if len(rec.Unknown) > 0 {
			note += fmt.Sprintf(" For %d the batch call was in flight: the patch may have started, check the console before retrying (it is *not* retried).", len(rec.Unknown))
		}
		if r.ParentTS == "" {
			b.tell(ctx, r.Channel, r.Requester, note)
		}
		title = note + "\n" + title
	}
	return rp.postParts(ctx, r, resultsKey(wave), "Batch results", messages(title, b.kitOf(b.targets.of(r)).resultLines(p, results)))
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
func (rp reporter) postParts(ctx context.Context, r store.Request, key, text string, parts [][]slack.Block) bool {
	b := rp.b
	for i := r.Posted[key]; i < len(parts); i++ {
		if !b.postThread(ctx, r.Channel, r.ParentTS, text, parts[i]) {
			return false
		}
		if err := b.run.MarkPosted(ctx, r.ID, key, i+1); err != nil {
			// Not recorded: a later try may post this part again, which
			// beats losing the rest of the report.
			b.log.Error().Err(err).Str("request_id", r.ID).Str("report", key).Msg("record a posted thread reply")
			return false
		}
	}
	return true
}

// Sent audits how a wave's sending ended and answers whoever set it going.
func (rp reporter) Sent(ctx context.Context, s patch.SendReport) {
	b, r := rp.b, s.Request
	p, _, _ := patch.PlanOf(r)
	a := requestAudit(r, r.Requester, targetIDs(p))
	counts := countJobs(s.Answers, nil)
	switch {
	case s.NotAnnounced != nil:
		b.audit("not_submitted", a, "reason", "could not post in channel: "+slackErrorCode(s.NotAnnounced))
		b.respondOrLog(ctx, s.Reply, fmt.Sprintf(":x: Nothing was patched: I could not post in this channel (`%s`). Invite the bot to the channel and run the command again.", esc(slackErrorCode(s.NotAnnounced))))
		return
	case s.Recovered != nil:
		b.audit("not_submitted", a, "reason", "bot stopped while submitting", "unknown", len(s.Recovered.Unknown), "not_sent", len(s.Recovered.Unsent))
		return
	case s.Wave < 0:
		b.respondOrLog(ctx, s.Reply, fmt.Sprintf(":calendar: Request `%s` is confirmed; its instances are scheduled for their maintenance windows. Follow it in the thread.", r.ID))
		return
	}
	b.audit("submitted", a, "wave", s.Wave, "job_ids", s.JobIDs, "errors", counts.NotSubmitted, "unknown", counts.Unknown)
	if len(s.Unexpected) > 0 && r.ParentTS != "" {
		b.postThread(ctx, r.Channel, r.ParentTS, "Unexpected batch answer", noticeBlocks(unexpectedText(s.Unexpected)))
	}
	if !s.Ended {
		return
	}
	msg := fmt.Sprintf(":rocket: Request `%s` submitted: %d of %s accepted.", r.ID, len(s.JobIDs), plural(len(s.Answers), "instance"))
	if counts.Unknown > 0 {
		msg += fmt.Sprintf(" For %d the outcome is unknown: the patch may have started, check the console before retrying.", counts.Unknown)
	}
	b.respondOrLog(ctx, s.Reply, msg+" Follow it in the thread.")
}

// jobsPerReply is how many job ends one thread reply reports at most: 100
// instances that end in one poll read in 5 replies.
const jobsPerReply = 20

// JobEnds posts the ends of jobs in their request's thread, in as few
// replies as Slack's limits allow (failures first, completions as a
// compact list); it stops at the first group Slack refuses.
func (rp reporter) JobEnds(ctx context.Context, r store.Request, jobs []store.Job) int {
	b := rp.b
	for _, j := range jobs {
		b.audit("job_finished", requestAudit(r, r.Requester, []string{j.InstanceID}),
			"job_id", j.ID, "status", j.Status, "fail_reason", j.FailReason, "gave_up", j.GaveUp)
	}
	b.ending.add(r.ID, 1)
	defer b.ending.add(r.ID, -1)
	now := b.cfg.Now()
	for i := 0; i < len(jobs); i += jobsPerReply {
		group := jobs[i:min(i+jobsPerReply, len(jobs))]
		for _, part := range b.kitOf(b.targets.of(r)).jobEndsBlocks(group, now) {
			part = withTarget(part, b.targets.labelOf(r))
			if !b.postThread(ctx, r.Channel, r.ParentTS, fmt.Sprintf("%s ended", plural(len(group), "job")), part) {
				return i
			}
		}
	}
	return len(jobs)
}

// Paused says in the thread that r is paused, with Continue and Stop.
func (rp reporter) Paused(ctx context.Context, r store.Request, step patch.Step) {
	b := rp.b
	b.audit("paused", requestAudit(r, r.Requester, step.Instances), "why", step.Why)
	who := "<@" + r.Requester + ">"
	if len(b.approversOf(r)) > 0 {
		who = mentionList(b.approversOf(r))
	}
	blocks := pausedBlocks(r.ID, step.Why, who)
	if !b.postThread(ctx, r.Channel, r.ParentTS, fmt.Sprintf("Request %s is paused", r.ID), blocks) {
		// The channel message carries the same buttons.
		b.log.Warn().Str("request_id", r.ID).Msg("the pause reply was not posted; the channel message offers Continue and Stop")
	}
	b.updateParent(ctx, r)
}

// pausedBlocks is the thread reply that says request id is paused and why,
// with Continue and Stop for who.
func pausedBlocks(id, why, who string) []slack.Block {
	text := fmt.Sprintf(":double_vertical_bar: Request `%s` is paused: %s. Nothing more is sent until %s presses *Continue*; *Stop* ends it.", id, esc(truncate(why, 2000)), who)
	return []slack.Block{section(truncate(text, maxSectionChars)), rolloutButtons(id, true, true)}
}

// Summary posts the final thread reply: versions before → after, every
// instance that did not start named (unknown ones with a warning that they
// may have started), and a mention of the requester.
func (rp reporter) Summary(ctx context.Context, r store.Request, s patch.Summary) bool {
	b := rp.b
	if b.ending.busy(r.ID) {
		// Job ends are still going out (paced): the summary comes after
		// them, at a later tick.
		return false
	}
	p, results, _ := patch.PlanOf(r)
	jobs, after := s.Jobs, s.After
	counts := countJobs(results, jobs)
	title := fmt.Sprintf("<@%s> request `%s` finished: %s.", r.Requester, r.ID, counts.String())
	title = titled(title, b.targets.labelOf(r))
	switch {
	case len(jobs) == 0 && counts.Unknown == 0:
		title += "\nNo patch job was started; nothing to follow."
	case counts.Unknown > 0:
		title += fmt.Sprintf("\n:warning: %s may have started: check the console before retrying.", plural(counts.Unknown, "instance"))
	}
	k := b.kitOf(b.targets.of(r))
	lines := k.summaryLines(r, jobs, after)
	lines = append(lines, k.unstartedLines(p, results, after)...)
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
		if !fits(append(append([]slack.Block(nil), parts[last]...), retryBlock(r.ID, len(ids))), maxMessageText-500) {
			parts = append(parts, nil)
			last++
		}
		parts[last] = append(parts[last], retryBlock(r.ID, len(ids)))
	}
	return rp.postParts(ctx, r, "summary", fmt.Sprintf("Request %s finished", r.ID), parts)
}

// Finished audits the end of r and shows it in its channel message.
func (rp reporter) Finished(ctx context.Context, r store.Request, jobs []store.Job) {
	b := rp.b
	_, results, _ := patch.PlanOf(r)
	counts := countJobs(results, jobs)
	b.audit("done", requestAudit(r, r.Requester, jobInstances(jobs)),
		"completed", counts.Completed, "failed", counts.Failed, "not_submitted", counts.NotSubmitted, "unknown", counts.Unknown, "state", string(r.State))
	b.updateParent(ctx, r)
}

// jobInstances lists the instance IDs of jobs.
func jobInstances(jobs []store.Job) []string {
	ids := make([]string, len(jobs))
	for i, j := range jobs {
		ids[i] = j.InstanceID
	}
	return ids
}

// Expired replaces the messages of a plan that expired, so stale buttons
// do not linger.
func (rp reporter) Expired(ctx context.Context, r store.Request) {
	b := rp.b
	p, _, _ := patch.PlanOf(r)
	b.audit("expired", requestAudit(r, r.Requester, targetIDs(p)))
	msg := expiredNote(r)
	if r.ResponseURL != "" {
		if err := b.respond(ctx, r.ResponseURL, true, msg, noticeBlocks(msg)); err != nil {
			b.log.Info().Err(err).Str("request_id", r.ID).Msg("could not mark the expired plan (response_url may have expired)")
		}
	}
	b.updateMessage(ctx, r.Channel, r.ApprovalTS, msg, noticeBlocks(msg))
}

// Refresh rewrites the channel message of r: counts, waves, buttons.
func (rp reporter) Refresh(ctx context.Context, r store.Request) { rp.b.updateParent(ctx, r) }

// updateParent rewrites the channel message of r from the store.
func (b *Bot) updateParent(ctx context.Context, r store.Request) {
	p, results, err := patch.PlanOf(r)
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

// postThread posts a reply under the parent message, logging failures.
func (b *Bot) postThread(ctx context.Context, channel, ts, text string, blocks []slack.Block) bool {
	_, _, err := b.api.PostMessageContext(ctx, channel, slack.MsgOptionTS(ts), slack.MsgOptionText(text, false), slack.MsgOptionBlocks(fit(blocks, maxMessageText, "")...))
	if refusedForContent(err) {
		// Never the same content again: a shorter one.
		_, _, err = b.api.PostMessageContext(ctx, channel, slack.MsgOptionTS(ts), slack.MsgOptionText(truncate(text, maxMessageChars), false), slack.MsgOptionBlocks(fit(blocks, shorter(blocks), "")...))
	}
	if err != nil {
		b.log.Error().Err(err).Str("channel", channel).Str("thread_ts", ts).Msg("thread reply failed")
		return false
	}
	return true
}
