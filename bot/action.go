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

// click is one button press, reduced to what the handlers need.
type click struct {
	action      string
	requestID   string
	user        string
	channel     string
	responseURL string
	team        string
	retry       int
}

// verbs maps the buttons' action_ids to the engine's verbs.
var verbs = map[string]patch.Verb{
	ActionConfirm:  patch.VerbConfirm,
	ActionCancel:   patch.VerbCancel,
	ActionApprove:  patch.VerbApprove,
	ActionReject:   patch.VerbReject,
	ActionContinue: patch.VerbContinue,
	ActionStop:     patch.VerbStop,
	ActionRetry:    patch.VerbRetry,
}

// onBlockAction handles a button press (after the ack): it loads the
// request, checks the click against today's configuration and the table
// of who may press what (patch.MayPress), and calls one Runner verb.
func (b *Bot) onBlockAction(ctx context.Context, cb slack.InteractionCallback, retry int) {
	for _, act := range cb.ActionCallback.BlockActions {
		c := click{
			action: act.ActionID, requestID: act.Value, user: cb.User.ID, channel: cb.Channel.ID,
			responseURL: cb.ResponseURL, team: cb.Team.ID, retry: retry,
		}
		if c.channel == "" {
			c.channel = cb.Container.ChannelID
		}
		v, ok := verbs[act.ActionID]
		if !ok {
			b.log.Debug().Str("action_id", act.ActionID).Msg("unknown action ignored")
			continue
		}
		r, p, ok := b.load(ctx, c)
		if !ok {
			continue
		}
		a := c.audit(r, p)
		if !b.mayPress(ctx, c, v, r, a) {
			continue
		}
		switch v {
		case patch.VerbConfirm:
			b.onConfirm(ctx, c, r, p)
		case patch.VerbCancel:
			b.onCancel(ctx, c, r)
		case patch.VerbApprove:
			b.onApprove(ctx, c, r, p)
		case patch.VerbReject:
			b.onReject(ctx, c, r)
		case patch.VerbContinue:
			b.onContinue(ctx, c, r)
		case patch.VerbStop:
			b.onStop(ctx, c, r)
		case patch.VerbRetry:
			b.onRetry(ctx, c, r, p)
		}
	}
}

// mayPress asks the table of who may press what whether the clicker may
// press v on r, looking the approvers up only when it matters; a refusal
// is audited and told.
func (b *Bot) mayPress(ctx context.Context, c click, v patch.Verb, r store.Request, a auditInfo) bool {
	approvers := b.approversOf(r)
	who := patch.Presser{Requester: c.user == r.Requester, ApprovalsOn: len(approvers) > 0}
	if patch.NeedsApprover(v, who) {
		ok, err := b.access.isApprover(ctx, c.user, approvers)
		switch {
		case err != nil && v == patch.VerbStop:
			b.log.Warn().Err(err).Str("request_id", r.ID).Msg("check approver for a Stop")
		case err != nil:
			b.log.Error().Err(err).Str("request_id", r.ID).Msg("check approver")
			b.tell(ctx, c.channel, c.user, "I could not check whether you are an approver (Slack user groups could not be read); nothing was done. Try again.")
			return false
		}
		who.Approver = ok
	}
	d := patch.MayPress(v, who)
	if d == patch.DenyNone {
		return true
	}
	var msg string
	switch d {
	case patch.DenyNoApprovals:
		b.tell(ctx, c.channel, c.user, "Approval is not configured for this request's target (BOT_APPROVERS is empty).")
		return false
	case patch.DenyNotRequester:
		msg = fmt.Sprintf("Only <@%s>, who asked for this plan, can %s it.", r.Requester, v)
		if v == patch.VerbContinue {
			msg = fmt.Sprintf("Only <@%s>, who asked for this patch, can continue it.", r.Requester)
		}
	case patch.DenyOwnRequest:
		msg = "You cannot approve or reject your own request: another approver must decide."
		if v == patch.VerbContinue {
			msg = "You cannot continue your own request while approvals are on: an approver must decide."
		}
	case patch.DenyNotApprover:
		msg = fmt.Sprintf("Only an approver (%s) can approve or reject this request.", mentionList(approvers))
	case patch.DenyNeither:
		msg = fmt.Sprintf("Only <@%s>, who asked for this patch, or an approver can stop it.", r.Requester)
	}
	b.audit("refused", a, "reason", string(d), "action", c.action)
	b.tell(ctx, c.channel, c.user, msg)
	return false
}

// load reads the request a button refers to and its plan; it answers the
// clicker itself when that fails.
func (b *Bot) load(ctx context.Context, c click) (store.Request, upgrade.Plan, bool) {
	r, err := b.st.Get(ctx, c.requestID)
	if errors.Is(err, store.ErrNotFound) {
		b.tell(ctx, c.channel, c.user, fmt.Sprintf("I do not know the patch request `%s` any more; nothing was done. Run the command again.", esc(c.requestID)))
		return r, upgrade.Plan{}, false
	}
	if err != nil {
		b.log.Error().Err(err).Str("request_id", c.requestID).Msg("read request")
		b.tell(ctx, c.channel, c.user, fmt.Sprintf("Something went wrong (request %s); nothing was done.", esc(c.requestID)))
		return r, upgrade.Plan{}, false
	}
	p, _, err := patch.PlanOf(r)
	if err != nil {
		b.log.Error().Err(err).Str("request_id", r.ID).Msg("decode stored request")
		b.tell(ctx, c.channel, c.user, fmt.Sprintf("Something went wrong (request %s); nothing was done.", r.ID))
		return r, p, false
	}
	return r, p, b.clickAllowed(ctx, c, r, p)
}

// clickAllowed re-checks, against today's configuration, that a click may
// act on r at all: it comes from r's workspace and channel, that channel is
// still allowed, and (but for Cancel, which only stops things, and the
// approvers' buttons, checked against BOT_APPROVERS) the clicker is still
// an allowed user. A plan shown yesterday carries no right of its own.
func (b *Bot) clickAllowed(ctx context.Context, c click, r store.Request, p upgrade.Plan) bool {
	a := c.audit(r, p)
	refuse := func(reason, msg string) bool {
		b.audit("refused", a, "reason", reason, "action", c.action)
		b.tell(ctx, c.channel, c.user, msg)
		return false
	}
	switch {
	case r.Team != "" && c.team != "" && c.team != r.Team:
		return refuse("click from another workspace", "This button belongs to another workspace's request; nothing was done.")
	case c.channel != r.Channel:
		return refuse("click from another channel", fmt.Sprintf("Request `%s` belongs to <#%s>; its buttons work only there. Nothing was done.", r.ID, r.Channel))
	case !b.access.channelAllowed(r.Channel):
		return refuse("channel not allowed", fmt.Sprintf("%s no longer works in this channel (BOT_ALLOWED_CHANNELS changed); nothing was done.", b.cfg.Command))
	case c.action != ActionCancel && c.action != ActionStop && b.targets.of(r) == nil:
		return refuse("target not configured", fmt.Sprintf("Request `%s` belongs to the GeminiDB target `%s`, which is no longer configured; nothing was done.", r.ID, esc(r.Target)))
	}
	if tg := b.targets.of(r); tg != nil {
		// The target's own allowlists, as today's configuration has them.
		// An approver's button is checked against the approvers instead of
		// allowed_users, as it is against BOT_ALLOWED_USERS.
		if !targetChannelAllowed(tg.Target, r.Channel) {
			return refuse("target not allowed in channel", fmt.Sprintf("The GeminiDB target `%s` cannot be used in this channel any more (its allowed_channels changed); nothing was done.", esc(tg.Name)))
		}
		approverButton := c.action == ActionApprove || c.action == ActionReject || (c.action == ActionContinue && len(b.approversOf(r)) > 0)
		if c.action != ActionCancel && c.action != ActionStop && !approverButton {
			reason, msg, err := b.targetRefusal(ctx, tg.Target, c.user, r.Channel)
			if err != nil {
				b.log.Error().Err(err).Str("request_id", r.ID).Msg("check user-group membership for a target")
			}
			if reason != "" {
				return refuse(reason, msg)
			}
		}
	}
	switch {
	case c.action == ActionCancel || c.action == ActionStop:
		return true // they only stop things; who may press them is checked by each
	case c.action == ActionApprove || c.action == ActionReject:
		return true // checked against BOT_APPROVERS
	case c.action == ActionContinue && len(b.approversOf(r)) > 0:
		return true // checked against BOT_APPROVERS
	}
	ok, err := b.access.userAllowed(ctx, c.user)
	if err != nil {
		b.log.Error().Err(err).Str("request_id", r.ID).Msg("check user-group membership")
		b.tell(ctx, c.channel, c.user, "I could not check whether you may patch (Slack user groups could not be read); nothing was done. Try again.")
		return false
	}
	if !ok {
		return refuse("user not allowed", fmt.Sprintf("You are not allowed to use %s any more (you are not in BOT_ALLOWED_USERS or its user groups); nothing was done.", b.cfg.Command))
	}
	return true
}

func (c click) audit(r store.Request, p upgrade.Plan) auditInfo {
	return requestAudit(r, c.user, targetIDs(p))
}

func targetIDs(p upgrade.Plan) []string {
	ids := make([]string, len(p.Targets))
	for i, t := range p.Targets {
		ids[i] = t.Instance.ID
	}
	return ids
}

// updateMessage edits a channel message, logging (not failing) on error.
func (b *Bot) updateMessage(ctx context.Context, channel, ts, text string, blocks []slack.Block) {
	if channel == "" || ts == "" {
		return
	}
	_, _, _, err := b.api.UpdateMessageContext(ctx, channel, ts, slack.MsgOptionText(text, false), slack.MsgOptionBlocks(fit(blocks, maxMessageText, "")...))
	if refusedForContent(err) {
		// Never the same content again: a shorter one.
		_, _, _, err = b.api.UpdateMessageContext(ctx, channel, ts, slack.MsgOptionText(truncate(text, maxMessageChars), false), slack.MsgOptionBlocks(fit(blocks, shorter(blocks), "")...))
	}
	if err != nil {
		b.log.Warn().Err(err).Str("channel", channel).Str("ts", ts).Msg("update message failed")
	}
}

// slackErrorCode returns Slack's error code (e.g. not_in_channel) of err.
func slackErrorCode(err error) string {
	var se slack.SlackErrorResponse
	if errors.As(err, &se) {
		return se.Err
	}
	return err.Error()
}

// approversOf are the approvers of r's target (none when the target is no
// longer configured).
func (b *Bot) approversOf(r store.Request) []string {
	if tg := b.targets.of(r); tg != nil {
		return tg.Approvers
	}
	return nil
}

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
	case errors.Is(err, patch.ErrNotFinal):
		b.tell(ctx, c.channel, c.user, fmt.Sprintf("Request `%s` is not finished yet; Retry is offered on its final summary.", r.ID))
		return
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
		// The rollout flags as typed; the fleet guard applies again to the
		// retry's own count.
		req.Canary, req.WaveSize, req.MaxErrors, req.WaitForWindow = orig.Canary, orig.WaveSize, orig.MaxErrors, orig.WaitForWindow
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
