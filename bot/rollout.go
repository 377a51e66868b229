package bot

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/slack-go/slack"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/commands"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/patch"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// The buttons of a rollout (DESIGN.md): Continue and Stop on a paused or
// still-sending request, Retry on a final summary with instances that were
// not patched.
const (
	ActionContinue = "patch_continue"
	ActionStop     = "patch_stop"
	ActionRetry    = "patch_retry"
)

// parentView is the channel message of r: the plan, the counts, and the
// rollout's waves with the buttons that still apply.
func (b *Bot) parentView(r store.Request, p upgrade.Plan, counts *Counts) ParentView {
	v := ParentView{Request: r, Plan: p, Counts: counts, Finished: r.State == store.Done, Target: b.targets.labelOf(r)}
	ro, err := patch.RolloutOf(r)
	if err != nil {
		return v
	}
	if len(ro.Waves) > 1 || (len(ro.Waves) == 1 && ro.Waves[0].Kind == patch.KindWindow) {
		v.Rollout = waveSummary(ro, b.cfg.Now())
	}
	switch {
	case ro.Stopped != nil:
		v.Status = fmt.Sprintf(":octagonal_sign: Stopped by %s: %s not sent.", who(ro.Stopped.By), plural(len(ro.Unsent()), "instance"))
		v.Finished = v.Finished || finished(r)
	case r.State == store.Paused && ro.Paused != nil:
		v.Status = ":double_vertical_bar: Paused: " + esc(ro.Paused.Why) + ". Continue sends the rest; Stop sends nothing more."
		v.Paused, v.CanStop = true, true
	default:
		v.CanStop = len(ro.Unsent()) > 0 && r.State != store.Done
	}
	return v
}

// who names the user a mark was made by ("" is the bot).
func who(user string) string {
	if user == "" {
		return "the bot"
	}
	return "<@" + user + ">"
}

// rolloutBlocks renders a channel message's waves, status and buttons.
func rolloutBlocks(v ParentView) []slack.Block {
	var blocks []slack.Block
	if len(v.Rollout) > 0 {
		blocks = append(blocks, contextBlock(truncate("*Rollout:* "+strings.Join(v.Rollout, " · "), maxSectionChars)))
	}
	if v.Status != "" {
		blocks = append(blocks, section(v.Status))
	}
	if btns := rolloutButtons(v.Request.ID, v.Paused, v.CanStop); btns != nil {
		blocks = append(blocks, btns)
	}
	return blocks
}

// rolloutButtons are Continue (when paused) and Stop (when something is
// still to be sent), or nil.
func rolloutButtons(id string, paused, canStop bool) slack.Block {
	var els []slack.BlockElement
	if paused {
		els = append(els, slack.NewButtonBlockElement(ActionContinue, id, plain("Continue")).
			WithStyle(slack.StyleDanger).
			WithConfirm(slack.NewConfirmationBlockObject(plain("Continue the rollout?"),
				plain("The instances not sent yet are sent, without waiting for the canary any more."), plain("Continue"), plain("Back"))))
	}
	if canStop {
		els = append(els, slack.NewButtonBlockElement(ActionStop, id, plain("Stop")).
			WithConfirm(slack.NewConfirmationBlockObject(plain("Stop the rollout?"),
				plain("Nothing more is sent for this request. Jobs already started run to their end and are still followed."), plain("Stop"), plain("Back"))))
	}
	if len(els) == 0 {
		return nil
	}
	return slack.NewActionBlock("rollout_actions", els...)
}

// pause holds a submitted request whose canary went wrong and says so in its
// thread, with Continue and Stop.
func (b *Bot) pause(ctx context.Context, r store.Request, step patch.Step) {
	r, err := b.life.Pause(ctx, r.ID)
	if err != nil {
		if !errors.Is(err, store.ErrConflict) {
			b.log.Error().Err(err).Str("request_id", r.ID).Msg("pause a request")
		}
		return
	}
	p, _, _ := decode(r)
	b.audit("paused", requestAudit(r, r.Requester, step.Instances), "why", step.Why)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), slackWriteTimeout)
	defer cancel()
	who := "<@" + r.Requester + ">"
	if len(b.approversOf(r)) > 0 {
		who = mentionList(b.approversOf(r))
	}
	text := fmt.Sprintf(":double_vertical_bar: Request `%s` is paused: %s. Nothing more is sent until %s presses *Continue*; *Stop* ends it.", r.ID, esc(step.Why), who)
	blocks := []slack.Block{section(truncate(text, maxSectionChars)), rolloutButtons(r.ID, true, true)}
	if !b.postThread(ctx, r.Channel, r.ParentTS, fmt.Sprintf("Request %s is paused", r.ID), blocks) {
		// The channel message carries the same buttons.
		b.log.Warn().Str("request_id", r.ID).Msg("the pause reply was not posted; the channel message offers Continue and Stop")
	}
	b.updateParent(ctx, r)
	_ = p
}

// onContinue is Continue on a paused request: the rest is sent, exactly
// once. It is pressed like Confirm: by the requester, or by an approver
// (not the requester) when approvals are on.
func (b *Bot) onContinue(ctx context.Context, c click) {
	r, p, ok := b.load(ctx, c)
	if !ok {
		return
	}
	a := c.audit(r, p)
	if len(b.approversOf(r)) > 0 {
		if !b.mayApprove(ctx, c, r, a) {
			return
		}
	} else if c.user != r.Requester {
		b.audit("refused", a, "reason", "not the requester", "action", c.action)
		b.tell(ctx, c.channel, c.user, fmt.Sprintf("Only <@%s>, who asked for this patch, can continue it.", r.Requester))
		return
	}
	r, err := b.life.Continue(ctx, r.ID, c.user)
	if err != nil {
		b.clickRefused(ctx, c, err)
		return
	}
	b.audit("continued", a)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), slackWriteTimeout)
	defer cancel()
	b.postThread(ctx, r.Channel, r.ParentTS, "Continued", noticeBlocks(fmt.Sprintf(":arrow_forward: <@%s> continued request `%s`: the instances not sent yet go out now (each wave in its window).", c.user, r.ID)))
	b.refreshRequest(ctx, r.ID)
}

// onStop is Stop: nothing more is sent for the request. The requester or
// an approver may press it.
func (b *Bot) onStop(ctx context.Context, c click) {
	r, p, ok := b.load(ctx, c)
	if !ok {
		return
	}
	a := c.audit(r, p)
	if c.user != r.Requester {
		if ok, err := b.access.isApprover(ctx, c.user, b.approversOf(r)); err != nil || !ok {
			b.audit("refused", a, "reason", "neither the requester nor an approver", "action", c.action)
			b.tell(ctx, c.channel, c.user, fmt.Sprintf("Only <@%s>, who asked for this patch, or an approver can stop it.", r.Requester))
			return
		}
	}
	r, err := b.life.Stop(ctx, r.ID, c.user)
	if err != nil {
		b.clickRefused(ctx, c, err)
		return
	}
	ro, _ := patch.RolloutOf(r)
	unsent := ro.Unsent()
	b.audit("stopped", a, "not_sent", unsent)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), slackWriteTimeout)
	defer cancel()
	msg := fmt.Sprintf(":octagonal_sign: <@%s> stopped request `%s`: nothing more is sent. Jobs already started run to their end and are still followed.", c.user, r.ID)
	if r.State == store.Submitting {
		msg += " The batch call in flight finishes; no further batch is sent."
	}
	if len(unsent) > 0 {
		names := map[string]string{}
		for _, t := range p.Targets {
			names[t.Instance.ID] = t.Instance.Name
		}
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
	b.refreshRequest(ctx, r.ID)
}

// onRetry is Retry on a final summary: a fresh plan of the instances that
// were not patched, shown to the clicker (who becomes its requester),
// confirmed and approved like any plan.
func (b *Bot) onRetry(ctx context.Context, c click) {
	r, p, ok := b.load(ctx, c)
	if !ok {
		return
	}
	jobs, err := b.st.Jobs(ctx, r.ID)
	if err != nil {
		b.log.Error().Err(err).Str("request_id", r.ID).Msg("read jobs for a retry")
		b.tell(ctx, c.channel, c.user, fmt.Sprintf("Something went wrong (request %s); nothing was done.", r.ID))
		return
	}
	ids, err := patch.NotPatched(r, jobs)
	if err != nil || len(ids) == 0 {
		b.tell(ctx, c.channel, c.user, fmt.Sprintf("Every instance of request `%s` was patched; there is nothing to retry.", r.ID))
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

// clickRefused answers a click whose verb the lifecycle refused: a lost
// race or a refusal is explained from the request's state; anything else
// is a failure the clicker hears about.
func (b *Bot) clickRefused(ctx context.Context, c click, err error) {
	if errors.Is(err, store.ErrConflict) {
		b.log.Info().Err(err).Str("request_id", c.requestID).Str("action_id", c.action).Msg("click lost the race")
		b.explain(ctx, c)
		return
	}
	b.log.Error().Err(err).Str("request_id", c.requestID).Str("action_id", c.action).Msg("record the click's decision")
	b.tell(ctx, c.channel, c.user, fmt.Sprintf("I could not record your click on request `%s` (the bot's store did not answer); click again.", c.requestID))
}

// retryBlock is the Retry button of a final summary.
func retryBlock(id string, n int) slack.Block {
	return slack.NewActionBlock("summary_actions",
		slack.NewButtonBlockElement(ActionRetry, id, plain(fmt.Sprintf("Retry %s", plural(n, "instance")))))
}
