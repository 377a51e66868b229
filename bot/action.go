package bot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/slack-go/slack"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/commands"
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

// onBlockAction handles a button press (after the ack).
func (b *Bot) onBlockAction(ctx context.Context, cb slack.InteractionCallback, retry int) {
	for _, act := range cb.ActionCallback.BlockActions {
		c := click{
			action: act.ActionID, requestID: act.Value, user: cb.User.ID, channel: cb.Channel.ID,
			responseURL: cb.ResponseURL, team: cb.Team.ID, retry: retry,
		}
		if c.channel == "" {
			c.channel = cb.Container.ChannelID
		}
		switch act.ActionID {
		case ActionConfirm:
			b.onConfirm(ctx, c)
		case ActionCancel:
			b.onCancel(ctx, c)
		case ActionApprove:
			b.onApprove(ctx, c)
		case ActionReject:
			b.onReject(ctx, c)
		case ActionContinue:
			b.onContinue(ctx, c)
		case ActionStop:
			b.onStop(ctx, c)
		case ActionRetry:
			b.onRetry(ctx, c)
		default:
			b.log.Debug().Str("action_id", act.ActionID).Msg("unknown action ignored")
		}
	}
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
	p, _, err := decode(r)
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

// decode reads the plan and the batch answers the bot stored on r.
func decode(r store.Request) (upgrade.Plan, []upgrade.UpgradeResult, error) {
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

// loadForRequester is load for the buttons only the requester may press
// (verb: "confirm", "cancel"); anyone else is refused and told why.
func (b *Bot) loadForRequester(ctx context.Context, c click, verb string) (store.Request, upgrade.Plan, auditInfo, bool) {
	r, p, ok := b.load(ctx, c)
	if !ok {
		return r, p, auditInfo{}, false
	}
	a := c.audit(r, p)
	if c.user != r.Requester {
		b.audit("refused", a, "reason", "not the requester", "action", c.action)
		b.tell(ctx, c.channel, c.user, fmt.Sprintf("Only <@%s>, who asked for this plan, can %s it.", r.Requester, verb))
		return r, p, a, false
	}
	return r, p, a, true
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
	r2, err := b.life.Expire(ctx, r.ID, c.user)
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

// swapFailed handles a failed transition a click asked for (to want). A
// lost race (ConflictError) is answered from the current state and an
// expired plan is expired. Anything else is a store failure: the request
// is read again, and when the swap did happen after all (token names the
// claim it carried, for submitting) the click goes on with the request
// returned and ok; otherwise the clicker hears that nothing was sent.
func (b *Bot) swapFailed(ctx context.Context, c click, r store.Request, p upgrade.Plan, want store.State, err error) (_ store.Request, ok bool) {
	var ee *store.ExpiredError
	switch {
	case errors.As(err, &ee):
		b.expire(ctx, c, r, p)
		return r, false
	case errors.Is(err, store.ErrConflict):
		// Lost the race (double click, redelivery, another replica): the
		// winner goes on.
		b.log.Info().Str("request_id", r.ID).Str("action_id", c.action).Err(err).Msg("click lost the race")
		b.explain(ctx, c)
		return r, false
	}
	b.log.Error().Err(err).Str("request_id", r.ID).Str("action_id", c.action).Msg("record the click's decision")
	cur, gerr := b.st.Get(ctx, r.ID)
	if gerr == nil && cur.State == want && want == store.AwaitingApproval && cur.ApprovalTS == "" && lastBy(cur, c.user) {
		b.log.Warn().Str("request_id", r.ID).Msg("the decision was recorded after all; going on")
		return cur, true
	}
	if gerr == nil && cur.State == store.Submitting && lastBy(cur, c.user) {
		// The swap happened, but its send went to nobody: the claim runs
		// out and the follower takes the wave over, reporting what it
		// finds (nothing in flight: not sent).
		b.tell(ctx, c.channel, c.user, fmt.Sprintf("Your click on request `%s` was recorded, but the bot's store failed while starting it; nothing was sent. The thread will say so shortly; run the command again for a fresh plan.", r.ID))
		return r, false
	}
	if gerr == nil && cur.State != r.State {
		b.explain(ctx, c)
		return r, false
	}
	b.tell(ctx, c.channel, c.user, fmt.Sprintf("I could not record your click on request `%s` (the bot's store did not answer), so nothing was sent. Click again.", r.ID))
	return r, false
}

// onConfirm is the requester's Confirm: request approval, or patch.
func (b *Bot) onConfirm(ctx context.Context, c click) {
	r, p, a, ok := b.loadForRequester(ctx, c, "confirm")
	if !ok {
		return
	}
	if !b.stillOpen(ctx, c, r, p, store.Planned) {
		return
	}
	if len(b.approversOf(r)) > 0 {
		b.requestApproval(ctx, c, r, p)
		return
	}
	won, send, err := b.life.Confirm(ctx, r.ID, c.user)
	if err != nil {
		b.swapFailed(ctx, c, r, p, store.Submitting, err)
		return
	}
	r = won
	b.audit("confirmed", a)
	b.goSend(ctx, r, send, c.responseURL)
}

// lastBy tells whether user made r's last state change.
func lastBy(r store.Request, user string) bool {
	return len(r.History) > 0 && r.History[len(r.History)-1].User == user
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
	if _, err := b.life.Cancel(ctx, r.ID, c.user); err != nil {
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

// requestApproval turns the requester's confirm into an approval request.
func (b *Bot) requestApproval(ctx context.Context, c click, r store.Request, p upgrade.Plan) {
	won, err := b.life.RequestApproval(ctx, r.ID, c.user)
	if err != nil {
		var ok bool
		if won, ok = b.swapFailed(ctx, c, r, p, store.AwaitingApproval, err); !ok {
			return
		}
	}
	r = won
	a := c.audit(r, p)
	approvers := b.approversOf(r)
	_, ts, err := b.api.PostMessageContext(ctx, r.Channel,
		slack.MsgOptionText(fmt.Sprintf("<@%s> asks for approval to patch %s (request %s)", r.Requester, plural(len(p.Targets), "GeminiDB instance"), r.ID), false),
		slack.MsgOptionBlocks(withTarget(b.kitOf(b.targets.of(r)).approvalBlocks(r, p, approvers), b.targets.labelOf(r))...))
	if err != nil {
		b.log.Error().Err(err).Str("request_id", r.ID).Msg("post approval request")
		if _, err := b.life.Reopen(ctx, r.ID, c.user); err != nil {
			// Safe: nobody was asked, so nobody can approve it, and it
			// expires with its TTL.
			b.log.Error().Err(err).Str("request_id", r.ID).Msg("return the plan to planned")
		}
		msg := fmt.Sprintf("I could not post the approval request in this channel (%s); nothing was done. Is the bot a member of the channel?", esc(slackErrorCode(err)))
		if err := b.respond(ctx, c.responseURL, false, msg, nil); err != nil {
			b.tell(ctx, c.channel, c.user, msg) // the response_url may have expired
		}
		return
	}
	if _, err := b.st.Update(ctx, r.ID, func(x *store.Request) error { x.ApprovalTS = ts; return nil }); err != nil {
		b.log.Error().Err(err).Str("request_id", r.ID).Msg("store approval message ts")
	}
	b.audit("approval_requested", a, "approvers", approvers)
	msg := fmt.Sprintf(":raised_hand: Plan `%s` is waiting for approval by %s. Nothing is patched until an approver approves.", r.ID, mentionList(approvers))
	b.respondOrLog(ctx, c.responseURL, msg)
}

// onApprove is an approver's Approve: the batch call, exactly once.
func (b *Bot) onApprove(ctx context.Context, c click) {
	r, p, ok := b.load(ctx, c)
	if !ok {
		return
	}
	a := c.audit(r, p)
	if !b.mayApprove(ctx, c, r, a) {
		return
	}
	if !b.stillOpen(ctx, c, r, p, store.AwaitingApproval) {
		return
	}
	// One compare-and-swap from awaiting approval to submitting: of two
	// approvers (or two clicks) one wins, and no request can be left
	// approved but never submitted. The approval is the recorded Approver
	// and the transition's event.
	won, send, err := b.life.Approve(ctx, r.ID, c.user)
	if err != nil {
		b.swapFailed(ctx, c, r, p, store.Submitting, err)
		return
	}
	r = won
	b.audit("approved", a, "requester", r.Requester)
	msg := fmt.Sprintf(":white_check_mark: <@%s> approved <@%s>'s request `%s` to patch %s.", c.user, r.Requester, r.ID, plural(len(p.Targets), "instance"))
	b.updateMessage(ctx, r.Channel, r.ApprovalTS, msg, noticeBlocks(msg))
	b.goSend(ctx, r, send, r.ResponseURL)
}

// onReject is an approver's Reject: nothing is patched, the requester is told.
func (b *Bot) onReject(ctx context.Context, c click) {
	r, p, ok := b.load(ctx, c)
	if !ok {
		return
	}
	a := c.audit(r, p)
	if !b.mayApprove(ctx, c, r, a) {
		return
	}
	r, err := b.life.Reject(ctx, r.ID, c.user)
	if err != nil {
		b.explain(ctx, c)
		return
	}
	b.audit("rejected", a, "requester", r.Requester)
	msg := fmt.Sprintf(":no_entry: <@%s> rejected <@%s>'s request `%s`; nothing was patched.", c.user, r.Requester, r.ID)
	b.updateMessage(ctx, r.Channel, r.ApprovalTS, msg, noticeBlocks(msg))
	b.tell(ctx, r.Channel, r.Requester, fmt.Sprintf("Your patch request `%s` was rejected by <@%s>; nothing was patched.", r.ID, c.user))
	b.respondOrLog(ctx, r.ResponseURL, msg)
}

// mayApprove tells whether the clicker may decide on r, and refuses them if not.
func (b *Bot) mayApprove(ctx context.Context, c click, r store.Request, a auditInfo) bool {
	approvers := b.approversOf(r)
	if len(approvers) == 0 {
		b.tell(ctx, c.channel, c.user, "Approval is not configured for this request's target (BOT_APPROVERS is empty).")
		return false
	}
	if c.user == r.Requester {
		b.audit("refused", a, "reason", "requester cannot approve own request", "action", c.action)
		msg := "You cannot approve or reject your own request: another approver must decide."
		if c.action == ActionContinue {
			msg = "You cannot continue your own request while approvals are on: an approver must decide."
		}
		b.tell(ctx, c.channel, c.user, msg)
		return false
	}
	ok, err := b.access.isApprover(ctx, c.user, approvers)
	if err != nil {
		b.log.Error().Err(err).Str("request_id", r.ID).Msg("check approver")
		b.tell(ctx, c.channel, c.user, "I could not check whether you are an approver (Slack user groups could not be read); nothing was done. Try again.")
		return false
	}
	if !ok {
		b.audit("refused", a, "reason", "not an approver", "action", c.action)
		b.tell(ctx, c.channel, c.user, fmt.Sprintf("Only an approver (%s) can approve or reject this request.", mentionList(approvers)))
		return false
	}
	return true
}

// onCancel is the requester's Cancel: nothing is called.
func (b *Bot) onCancel(ctx context.Context, c click) {
	r, _, a, ok := b.loadForRequester(ctx, c, "cancel")
	if !ok {
		return
	}
	r, err := b.life.Cancel(ctx, r.ID, c.user)
	if err != nil {
		b.explain(ctx, c)
		return
	}
	b.audit("cancelled", a)
	msg := fmt.Sprintf(":no_entry_sign: Plan `%s` cancelled; nothing was patched.", r.ID)
	b.respondOrLog(ctx, c.responseURL, msg)
	if r.ApprovalTS != "" {
		b.updateMessage(ctx, r.Channel, r.ApprovalTS, msg, noticeBlocks(msg))
	}
}

// updateMessage edits a channel message, logging (not failing) on error.
func (b *Bot) updateMessage(ctx context.Context, channel, ts, text string, blocks []slack.Block) {
	if channel == "" || ts == "" {
		return
	}
	if _, _, _, err := b.api.UpdateMessageContext(ctx, channel, ts, slack.MsgOptionText(text, false), slack.MsgOptionBlocks(blocks...)); err != nil {
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
