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
	switch {
	case ro.WaveSize > 0:
		v.Rollout = waveProgress(r, ro, counts)
	case len(ro.Waves) > 1 || (len(ro.Waves) == 1 && ro.Waves[0].Kind == patch.KindWindow):
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
				plain("The instances not sent yet are sent, without waiting for the canary any more; the instances that went wrong so far no longer count against --max-errors."), plain("Continue"), plain("Back"))))
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

// waveProgress describes a rollout in waves for its channel message, in a
// few lines however many waves it has: the wave it is at ("wave 3 of 14:
// 10 instances, running"), the next one, and the error budget used.
func waveProgress(r store.Request, ro patch.Rollout, counts *Counts) []string {
	n := len(ro.Waves)
	if n == 0 {
		return nil
	}
	at := -1
	for k, w := range ro.Waves {
		if !w.Started.IsZero() {
			at = k
		}
	}
	var lines []string
	if at < 0 {
		lines = append(lines, fmt.Sprintf("%s, none sent yet", plural(n, "wave")))
	} else {
		w := ro.Waves[at]
		status := "sent"
		switch {
		case w.Ended.IsZero():
			status = "sending"
		case counts != nil && counts.Running > 0:
			status = "running"
		case r.State == store.Paused:
			status = "paused"
		case r.State == store.Done || patch.Finished(r):
			status = "ended"
		}
		kind := ""
		if w.Kind == patch.KindCanary {
			kind = ", canary"
		}
		lines = append(lines, fmt.Sprintf("wave %d of %d%s: %s, %s", at+1, n, kind, plural(len(w.InstanceIDs()), "instance"), status))
	}
	if next := at + 1; next < n {
		w := ro.Waves[next]
		line := fmt.Sprintf("next: wave %d of %d, %s", next+1, n, plural(len(w.InstanceIDs()), "instance"))
		switch {
		case ro.Stopped != nil:
			line = fmt.Sprintf("waves %d–%d not sent (stopped)", next+1, n)
		case w.Kind == patch.KindWindow:
			line += fmt.Sprintf(", in its window %s UTC", w.Window)
		case next > 0:
			line += ", once every job before it ended"
		}
		lines = append(lines, line)
	}
	used := 0
	if counts != nil {
		used = max(counts.Failed+counts.Unknown+counts.Unfollowed+counts.NotSubmitted-len(ro.Accepted), 0)
	}
	budget := fmt.Sprintf("errors: %d of %d allowed (--max-errors %d)", used, ro.MaxErrors, ro.MaxErrors)
	if len(ro.Accepted) > 0 {
		budget += fmt.Sprintf(", %d more accepted by Continue", len(ro.Accepted))
	}
	return append(lines, budget)
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
// rollout of one wave. A rollout in waves is said in one sentence.
func rolloutText(ro patch.Rollout, now time.Time) string {
	if ro.WaveSize > 0 && len(ro.Waves) > 0 {
		return planWavesText(ro)
	}
	if len(ro.Waves) < 2 && (len(ro.Waves) == 0 || ro.Waves[0].Kind != patch.KindWindow) {
		return ""
	}
	return "Rollout: " + strings.Join(waveSummary(ro, now), "; ") + "."
}

// planWavesText says how a rollout in waves will go, for its plan: "Rollout:
// canary of 1 instance first, then 24 instances in 5 waves of at most 5,
// each once every job of the wave before it ended; up to 1 failed or
// unknown instance, the rollout goes on, one more pauses it."
func planWavesText(ro patch.Rollout) string {
	canary, rest, waves := 0, 0, 0
	scheduled := 0
	for _, w := range ro.Waves {
		switch w.Kind {
		case patch.KindCanary:
			canary += len(w.InstanceIDs())
		case patch.KindWindow:
			scheduled += len(w.InstanceIDs())
			rest += len(w.InstanceIDs())
			waves++
		default:
			rest += len(w.InstanceIDs())
			waves++
		}
	}
	var parts []string
	if canary > 0 {
		parts = append(parts, fmt.Sprintf("canary of %s first", plural(canary, "instance")))
	}
	if rest > 0 {
		s := fmt.Sprintf("%s in %s of at most %d, each once every job of the wave before it ended", plural(rest, "instance"), plural(waves, "wave"), ro.WaveSize)
		if scheduled > 0 {
			s += fmt.Sprintf(" (%d held to their maintenance window)", scheduled)
		}
		if canary > 0 {
			s = "then " + s
		}
		parts = append(parts, s)
	}
	budget := "any failed or unknown instance pauses it (Continue / Stop)"
	if ro.MaxErrors > 0 {
		budget = fmt.Sprintf("up to %s failed or unknown, the rollout goes on; one more pauses it (Continue / Stop)", plural(ro.MaxErrors, "instance"))
	}
	return "Rollout: " + strings.Join(parts, ", ") + "; " + budget + "."
}
