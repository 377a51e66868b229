package bot

import (
	"fmt"
	"strings"
	"time"

	"github.com/slack-go/slack"

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
		v.Finished = v.Finished || patch.Finished(r)
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

// retryBlock is the Retry button of a final summary.
func retryBlock(id string, n int) slack.Block {
	return slack.NewActionBlock("summary_actions",
		slack.NewButtonBlockElement(ActionRetry, id, plain(fmt.Sprintf("Retry %s", plural(n, "instance")))))
}

// waveSummary describes a rollout's waves for the plan, e.g. "canary: 1,
// then 9" or "3 scheduled for 02:00-06:00 UTC, opens in 5h12m".
func waveSummary(ro patch.Rollout, now time.Time) []string {
	var lines []string
	for k, w := range ro.Waves {
		n := len(w.InstanceIDs())
		var line string
		switch w.Kind {
		case patch.KindCanary:
			line = fmt.Sprintf("wave %d, canary: %s first", k+1, plural(n, "instance"))
		case patch.KindWindow:
			line = fmt.Sprintf("wave %d: %s scheduled for %s UTC, %s", k+1, plural(n, "instance"), w.Window, openingText(w, now))
		default:
			line = fmt.Sprintf("wave %d: %s", k+1, plural(n, "instance"))
			if k > 0 && ro.Waves[0].Kind == patch.KindCanary {
				line += " once every canary job completed"
			}
		}
		switch {
		case !w.Ended.IsZero():
			line += " — sent"
		case !w.Started.IsZero():
			line += " — sending"
		case ro.Stopped != nil:
			line += " — not sent (stopped)"
		}
		lines = append(lines, line)
	}
	return lines
}

// openingText says when a window wave opens: "opens in 5h12m", or, once
// its planned opening passed unsent, "missed its window at 02:00 UTC on
// 4 Dec; next opens in 17h" ("…; open now" while the window is open).
func openingText(w patch.Wave, now time.Time) string {
	at, missed := w.NextOpening(now)
	next := "opens in " + shortDuration(ceilMinute(at.Sub(now)))
	if !at.After(now) {
		next = "open now"
	}
	if !missed {
		return next
	}
	return fmt.Sprintf("missed its window at %s; next %s", w.Opens.UTC().Format("15:04 UTC on 2 Jan"), next)
}

// ceilMinute rounds d up to a whole minute: "opens in 0m" would be wrong
// while the window is still closed.
func ceilMinute(d time.Duration) time.Duration {
	if r := d % time.Minute; r != 0 {
		d += time.Minute - r
	}
	return d
}

// rolloutText is waveSummary as one line for the plan: "" for a plain
// rollout of one wave.
func rolloutText(ro patch.Rollout, now time.Time) string {
	if len(ro.Waves) < 2 && (len(ro.Waves) == 0 || ro.Waves[0].Kind != patch.KindWindow) {
		return ""
	}
	return "Rollout: " + strings.Join(waveSummary(ro, now), "; ") + "."
}
