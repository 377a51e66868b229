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

// The button handlers. Each is reached from onBlockAction once the click
// was loaded and checked (clickAllowed, mayPress), and calls one Runner
// verb; the Runner says in Slack what it did (reporter), the handler only
// answers a click the verb refused.

// onConfirm is the requester's Confirm: request approval, or patch.
func (b *Bot) onConfirm(ctx context.Context, c click, r store.Request, p upgrade.Plan) {
	if !b.stillOpen(ctx, c, r, p, store.Planned) {
		return
	}
	if _, err := b.run.Confirm(ctx, r.ID, c.user, c.responseURL); err != nil {
		b.swapFailed(ctx, c, r, p, err)
	}
}

// onApprove is an approver's Approve: the batch call, exactly once.
func (b *Bot) onApprove(ctx context.Context, c click, r store.Request, p upgrade.Plan) {
	if !b.stillOpen(ctx, c, r, p, store.AwaitingApproval) {
		return
	}
	// One compare-and-swap from awaiting approval to submitting: of two
	// approvers (or two clicks) one wins, and no request can be left
	// approved but never submitted.
	if _, err := b.run.Approve(ctx, r.ID, c.user); err != nil {
		b.swapFailed(ctx, c, r, p, err)
	}
}

// onReject is an approver's Reject: nothing is patched, the requester is told.
func (b *Bot) onReject(ctx context.Context, c click, r store.Request) {
	if _, err := b.run.Reject(ctx, r.ID, c.user); err != nil {
		b.explain(ctx, c)
	}
}

// onCancel is the requester's Cancel: nothing is called.
func (b *Bot) onCancel(ctx context.Context, c click, r store.Request) {
	if _, err := b.run.Cancel(ctx, r.ID, c.user, c.responseURL); err != nil {
		b.explain(ctx, c)
	}
}

// onContinue is Continue on a paused request: the rest is sent, exactly
// once.
func (b *Bot) onContinue(ctx context.Context, c click, r store.Request) {
	if _, err := b.run.Continue(ctx, r.ID, c.user); err != nil {
		b.clickRefused(ctx, c, err)
	}
}

// onStop is Stop: nothing more is sent for the request.
func (b *Bot) onStop(ctx context.Context, c click, r store.Request) {
	if _, err := b.run.Stop(ctx, r.ID, c.user); err != nil {
		b.clickRefused(ctx, c, err)
	}
}

// onRetry is Retry on a final summary: a fresh plan of the instances that
// were not patched, shown to the clicker (who becomes its requester),
// confirmed and approved like any plan.
func (b *Bot) onRetry(ctx context.Context, c click, r store.Request, p upgrade.Plan) {
	ids, err := b.run.Retry(ctx, r.ID)
	switch {
	case errors.Is(err, patch.ErrNothingToRetry):
		b.tell(ctx, c.channel, c.user, fmt.Sprintf("Every instance of request `%s` was patched; there is nothing to retry.", r.ID))
		return
	case err != nil:
		b.log.Error().Err(err).Str("request_id", r.ID).Msg("read jobs for a retry")
		b.tell(ctx, c.channel, c.user, fmt.Sprintf("Something went wrong (request %s); nothing was done.", r.ID))
		return
	}
	b.audit("retry", c.audit(r, p), "instances", ids)
	orig, perr := commands.Parse(r.Text)
	req := commands.Request{Kind: commands.KindPatch, Instances: ids, Force: r.Force, Target: b.targets.nameOf(r)}
	if perr == nil {
		req.WaitForWindow = orig.WaitForWindow
	}
	cmd := slack.SlashCommand{UserID: c.user, ChannelID: r.Channel, TeamID: c.team, ResponseURL: c.responseURL, Command: b.cfg.Command}
	note := fmt.Sprintf("Retry of `%s`: a fresh plan of the %s that were not patched. Review it before confirming.", r.ID, plural(len(ids), "instance"))
	b.runPlan(ctx, newID("r-"), cmd, req, note, false)
}

// clickRefused answers a click whose verb the engine refused: a lost race
// or a refusal is explained from the request's state; anything else is a
// failure the clicker hears about.
func (b *Bot) clickRefused(ctx context.Context, c click, err error) {
	if errors.Is(err, store.ErrConflict) {
		b.log.Info().Err(err).Str("request_id", c.requestID).Str("action_id", c.action).Msg("click lost the race")
		b.explain(ctx, c)
		return
	}
	b.log.Error().Err(err).Str("request_id", c.requestID).Str("action_id", c.action).Msg("record the click's decision")
	b.tell(ctx, c.channel, c.user, fmt.Sprintf("I could not record your click on request `%s` (the bot's store did not answer); click again.", c.requestID))
}
