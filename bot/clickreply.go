package bot

import (
	"context"
	"errors"
	"fmt"

	"github.com/slack-go/slack"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/commands"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/patch"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// explain tells the clicker why their click changed nothing, from the
// request's current state (a redelivered click is answered quietly).
func (b *Bot) explain(ctx context.Context, c click) {
	if c.retry > 0 {
		return
	}
	cur, err := b.st.Get(ctx, c.requestID)
	if err != nil {
		b.tell(ctx, c.channel, c.user, fmt.Sprintf("Request `%s` could not be read; nothing was done.", esc(c.requestID)))
		return
	}
	b.tell(ctx, c.channel, c.user, stateNote(cur))
}

// stateNote explains to a clicker why a request cannot take the click.
func stateNote(r store.Request) string {
	switch r.State {
	case store.Submitting, store.Submitted, store.Done:
		return fmt.Sprintf("Request `%s` was already confirmed (or continued); nothing is sent twice.", r.ID)
	case store.Paused:
		return fmt.Sprintf("Request `%s` is paused; its thread offers Continue and Stop.", r.ID)
	case store.Stopped:
		return fmt.Sprintf("Request `%s` was stopped; nothing more is sent.", r.ID)
	case store.Cancelled:
		return fmt.Sprintf("Request `%s` was cancelled; nothing was done.", r.ID)
	case store.Rejected:
		return fmt.Sprintf("Request `%s` was rejected; nothing was done.", r.ID)
	case store.Expired:
		return fmt.Sprintf("Request `%s` has expired; nothing was done. Run the command again for a fresh plan.", r.ID)
	case store.AwaitingApproval:
		return fmt.Sprintf("Request `%s` is waiting for an approver.", r.ID)
	default:
		return fmt.Sprintf("Request `%s` is %s.", r.ID, r.State)
	}
}

// expireIfDue moves an open request past its TTL to expired and says so.
func (b *Bot) expireIfDue(ctx context.Context, c click, r store.Request, p upgrade.Plan) bool {
	if b.cfg.Now().Before(r.ExpiresAt) {
		return false
	}
	b.expire(ctx, c, r, p)
	return true
}

// expire moves r, found past its TTL by a click, to expired and says so.
func (b *Bot) expire(ctx context.Context, c click, r store.Request, p upgrade.Plan) {
	r2, err := b.run.Expire(ctx, r.ID, c.user)
	if err != nil {
		if !errors.Is(err, store.ErrConflict) {
			b.log.Error().Err(err).Str("request_id", r.ID).Msg("expire plan")
		}
		b.explain(ctx, c) // decided meanwhile (e.g. expired by the sweeper)
		return
	}
	b.audit("expired", c.audit(r, p))
	msg := expiredNote(r)
	if c.action == ActionConfirm || c.action == ActionCancel {
		b.respondOrLog(ctx, c.responseURL, msg)
	} else {
		b.updateMessage(ctx, r2.Channel, r2.ApprovalTS, msg, noticeBlocks(msg))
		b.tell(ctx, c.channel, c.user, msg)
	}
	if r.State == store.AwaitingApproval {
		b.respondOrLog(ctx, r.ResponseURL, msg)
	}
}

// swapFailed answers a click whose verb failed. A lost race
// (ConflictError) is answered from the current state and an expired plan
// is expired; ErrReported was answered already. Anything else is a store
// failure: the request is read again, and the clicker hears whether the
// click was recorded after all (its send then went to nobody) or that
// nothing was sent.
func (b *Bot) swapFailed(ctx context.Context, c click, r store.Request, p upgrade.Plan, err error) {
	var ee *store.ExpiredError
	switch {
	case errors.Is(err, patch.ErrReported):
		return
	case errors.As(err, &ee):
		b.expire(ctx, c, r, p)
		return
	case errors.Is(err, store.ErrConflict):
		// Lost the race (double click, redelivery, another replica): the
		// winner goes on.
		b.log.Info().Str("request_id", r.ID).Str("action_id", c.action).Err(err).Msg("click lost the race")
		b.explain(ctx, c)
		return
	}
	b.log.Error().Err(err).Str("request_id", r.ID).Str("action_id", c.action).Msg("record the click's decision")
	cur, gerr := b.st.Get(ctx, r.ID)
	if gerr == nil && cur.State == store.Submitting && patch.LastBy(cur, c.user) {
		// The swap happened, but its send went to nobody: the claim runs
		// out and the follower takes the wave over, reporting what it
		// finds (nothing in flight: not sent).
		b.tell(ctx, c.channel, c.user, fmt.Sprintf("Your click on request `%s` was recorded, but the bot's store failed while starting it; nothing was sent. The thread will say so shortly; run the command again for a fresh plan.", r.ID))
		return
	}
	if gerr == nil && cur.State != r.State {
		b.explain(ctx, c)
		return
	}
	b.tell(ctx, c.channel, c.user, fmt.Sprintf("I could not record your click on request `%s` (the bot's store did not answer), so nothing was sent. Click again.", r.ID))
}

// stillOpen tells whether a click on r may go ahead: r is still in state
// want, has not expired, and its instances have not changed since the plan.
// Otherwise the clicker is answered (a redelivered click quietly).
func (b *Bot) stillOpen(ctx context.Context, c click, r store.Request, p upgrade.Plan, want store.State) bool {
	if r.State != want {
		if c.retry == 0 {
			b.tell(ctx, c.channel, c.user, stateNote(r))
		}
		return false
	}
	if b.expireIfDue(ctx, c, r, p) {
		return false
	}
	return b.checkDrift(ctx, c, r, p)
}

// checkDrift looks the planned instances up again. When any changed since
// the plan was shown it refuses, retires the old plan and shows a fresh one:
// nobody approved patching what the instances are now.
func (b *Bot) checkDrift(ctx context.Context, c click, r store.Request, p upgrade.Plan) bool {
	ids := targetIDs(p)
	res, err := b.targets.of(r).DB.Resolve(ctx, ids)
	if err != nil {
		b.log.Error().Err(err).Str("request_id", r.ID).Msg("re-check instances before patching")
		b.tell(ctx, c.channel, c.user, "I could not re-check the instances before patching, so nothing was done; click again to retry.\n"+b.userError(err, r.ID))
		return false
	}
	current := map[string]upgrade.Instance{}
	for _, id := range ids {
		if inst, ok := res.Found[id]; ok {
			current[id] = inst
		}
	}
	drift := p.DriftAt(current, b.cfg.Now().UTC())
	if len(drift) == 0 {
		return true
	}
	if _, err := b.run.Retire(ctx, r.ID, c.user); err != nil {
		// Decided meanwhile (or the store failed): nothing was sent either way.
		b.log.Info().Err(err).Str("request_id", r.ID).Msg("retire a drifted plan")
		b.explain(ctx, c)
		return false
	}
	b.audit("refused", c.audit(r, p), "reason", "instances changed since the plan", "drift", drift)
	lines := ""
	for _, d := range drift {
		lines += "\n• " + esc(d)
	}
	note := fmt.Sprintf("Plan `%s` was not submitted because instances changed since it was shown:%s\nHere is a fresh plan; review it before confirming.", r.ID, lines)
	msg := fmt.Sprintf(":warning: Plan `%s` was not submitted: instances changed since it was shown. A fresh plan was offered to <@%s>.", r.ID, r.Requester)
	if r.State == store.AwaitingApproval {
		b.updateMessage(ctx, r.Channel, r.ApprovalTS, msg, noticeBlocks(msg))
	}
	req, err := commands.Parse(r.Text)
	if err != nil {
		req = commands.Request{Kind: commands.KindPatch, Instances: p.Refs, Force: r.Force}
	}
	req.Target = b.targets.nameOf(r) // the fresh plan stays on the request's target
	cmd := slack.SlashCommand{UserID: r.Requester, ChannelID: r.Channel, TeamID: r.Team, ResponseURL: r.ResponseURL, Command: b.cfg.Command}
	if c.user == r.Requester && c.responseURL != "" {
		cmd.ResponseURL = c.responseURL
	}
	b.runPlan(ctx, newID("r-"), cmd, req, note, true)
	return false
}
