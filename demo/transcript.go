package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/slacktest"
)

// The tour's settings: the cloud's clock runs tourSpeed times faster, so
// the fleet's 14 s and 21 s jobs end about 1.4 s and 2.1 s after the
// click, and the bot polls often enough to see each end on its own.
const (
	tourSpeed = 10
	tourPoll  = 100 * time.Millisecond
	// tourCommand patches two instances (one job completes, one fails) and
	// names one outside its window and one without a patch.
	tourCommand = Command + " cass-orders-prod-1 cass-orders-prod-2 cass-payments-prod influx-legacy-1"
	// tourFleetCommand plans the staging fleet by its tag, as a dry run.
	tourFleetCommand = Command + " tag:env=staging --dry-run"
	// tourClock is the time of day the transcript shows the tour starting at.
	tourClock = 3 * time.Hour
	// tourDate is the date the transcript shows the tour on.
	tourDate = "2026-01-15"
)

// Transcript plays the scripted tour (a plan, its confirmation, the
// thread, a job completing and one failing, the final summary, then a dry
// run of the staging fleet selected by its tag) against the
// real bot and writes the conversation to out as readable text that is the
// same in every run.
func Transcript(ctx context.Context, out io.Writer, runBot BotRunner, logs io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for attempt := 1; ; attempt++ {
		text, sameMinute, err := tour(ctx, runBot, logs)
		if err != nil {
			return err
		}
		// The plan shows clock times the transcript can only make stable
		// when the tour did not cross a minute; the next try starts early
		// in a fresh minute.
		if sameMinute || attempt == 3 {
			_, err = io.WriteString(out, text)
			return err
		}
	}
}

// tour runs the tour once in a fresh World. sameMinute tells whether the
// plan was made in the minute the fleet was seeded in.
func tour(ctx context.Context, runBot BotRunner, logs io.Writer) (text string, sameMinute bool, err error) {
	anchor := time.Now().UTC().Truncate(time.Minute)
	w, err := newWorld(worldOptions{anchor: anchor, speed: tourSpeed, poll: tourPoll, logs: logs}, runBot)
	if err != nil {
		return "", false, err
	}
	defer func() {
		if cerr := w.Close(); err == nil {
			err = cerr
		}
	}()
	if err := w.Start(ctx); err != nil {
		return "", false, err
	}
	c := w.Conv
	step := func(desc string, cond func() bool) error {
		if err := w.Slack.WaitFor(ctx, desc, func(*slacktest.Server) bool { return cond() }); err != nil {
			return fmt.Errorf("demo tour: %w; the bot's log ends:\n%s", err, w.LogTail(20))
		}
		return nil
	}

	if err := c.Command(ctx, Requester.ID, tourCommand); err != nil {
		return "", false, err
	}
	var plan ViewMessage
	if err := step("the plan", func() bool {
		var ok bool
		plan, ok = findMessage(c.View(Requester.ID), func(m ViewMessage) bool {
			_, _, has := findButton(m.Blocks, "patch_confirm", buttonValue(m.Blocks, "patch_confirm"))
			return m.Kind == "ephemeral" && has
		})
		return ok
	}); err != nil {
		return "", false, err
	}
	sameMinute = time.Now().UTC().Truncate(time.Minute).Equal(anchor)
	if !sameMinute {
		return "", false, nil
	}
	if err := c.Click(ctx, Requester.ID, Target{Eph: plan.Eph}, "patch_confirm", buttonValue(plan.Blocks, "patch_confirm")); err != nil {
		return "", false, err
	}
	if err := step("the final summary", func() bool {
		parent, ok := findMessage(c.View(Requester.ID), func(m ViewMessage) bool {
			return m.Kind == "message" && strings.Contains(slacktest.BlocksText(m.Blocks), "has finished")
		})
		return ok && len(parent.Replies) > 0 && strings.Contains(slacktest.BlocksText(parent.Replies[len(parent.Replies)-1].Blocks), "finished:")
	}); err != nil {
		return "", false, err
	}
	// The fleet example: a selector instead of names, planned only.
	if err := c.Command(ctx, Requester.ID, tourFleetCommand); err != nil {
		return "", false, err
	}
	if err := step("the fleet plan", func() bool {
		_, ok := findMessage(c.View(Requester.ID), func(m ViewMessage) bool {
			return m.Kind == "ephemeral" && strings.Contains(slacktest.BlocksText(m.Blocks), "for `tag:env=staging`")
		})
		return ok
	}); err != nil {
		return "", false, err
	}
	// The rocket (submitted) answer replaced the plan before the jobs ended.
	if err := w.Stop(); err != nil {
		return "", false, err
	}
	shift := tourClock - anchor.Sub(anchor.Truncate(24*time.Hour))
	return renderTranscript(c.Entries(), shift), true, nil
}

// findMessage finds the first timeline message for which match holds.
func findMessage(v View, match func(ViewMessage) bool) (ViewMessage, bool) {
	for _, m := range v.Timeline {
		if match(m) {
			return m, true
		}
	}
	return ViewMessage{}, false
}

// buttonValue is the value of the first button with actionID in blocks.
func buttonValue(blocks json.RawMessage, actionID string) string {
	for _, b := range buttons(blocks) {
		if b.ActionID == actionID {
			return b.Value
		}
	}
	return ""
}

// Columns of the transcript: who, then what.
const whoWidth = 9

// renderTranscript writes the conversation as text: who did or said what,
// ephemeral messages marked with who sees them, thread replies indented,
// edits of channel messages shown in full. Request IDs are numbered, long
// instance IDs shortened, and clock times moved by shift, so the text is
// the same in every run.
func renderTranscript(entries []Entry, shift time.Duration) string {
	var b strings.Builder
	name := func(id string) string {
		switch id {
		case slacktest.BotUserID:
			return "geminidb-patch"
		case Channel.ID:
			return Channel.Name
		}
		return person(id).Name
	}
	write := func(who string, lines []string) {
		for i, line := range lines {
			if i > 0 {
				who = ""
			}
			fmt.Fprintf(&b, "%-*s%s\n", whoWidth, who, strings.TrimRight(line, " "))
		}
	}
	fmt.Fprintf(&b, "#%s, as %s sees it\n", Channel.Name, person(Requester.ID).Name)
	for _, e := range entries {
		switch e.Kind {
		case entryCommand:
			write(name(e.User), []string{e.Text})
		case entryClick:
			line := "clicks [" + e.Text + "]"
			if e.Dialog != nil {
				line += fmt.Sprintf(", then [%s] in the dialog “%s”", e.Dialog.Confirm, e.Dialog.Title)
			}
			write(name(e.User), []string{line})
		case entryEphemeral:
			tag := "(only " + name(e.User) + " sees this)"
			if e.Replaces {
				tag = "(only " + name(e.User) + " sees this; replaces the previous one)"
			}
			who := "bot"
			if e.From == "slackbot" {
				who = "slackbot"
			}
			lines := blocksText(e.Text, e.Blocks, name)
			if len(lines) == 1 {
				write(who, []string{tag + " " + lines[0]})
			} else {
				write(who, append([]string{tag}, lines...))
			}
		case entryPost:
			write("bot", blocksText(e.Text, e.Blocks, name))
		case entryReply:
			write("  thread", blocksText(e.Text, e.Blocks, name))
		case entryEdit:
			write("bot", append([]string{"(edits its channel message)"}, blocksText(e.Text, e.Blocks, name)...))
		case entryDelete:
			write("bot", []string{"(deletes a message)"})
		}
	}
	return normalise(b.String(), shift)
}

var (
	requestID  = regexp.MustCompile(`\br-[0-9a-f]{12}\b`)
	instanceID = regexp.MustCompile(`\b([0-9a-f]{4})[0-9a-f]{28}(in[0-9]{2})\b`)
	clockTime  = regexp.MustCompile(`\b([01][0-9]|2[0-3]):([0-5][0-9])\b`)
	calendar   = regexp.MustCompile(`\b20[0-9]{2}-[01][0-9]-[0-3][0-9]\b`)
)

// normalise makes a transcript stable: the bot's random request IDs become
// r-000000000001, r-000000000002… in order of appearance; instance IDs are
// shortened to their first four digits and their engine suffix; dates
// become tourDate and clock times move by shift.
func normalise(s string, shift time.Duration) string {
	s = calendar.ReplaceAllString(s, tourDate)
	seen := map[string]string{}
	s = requestID.ReplaceAllStringFunc(s, func(id string) string {
		if n, ok := seen[id]; ok {
			return n
		}
		n := fmt.Sprintf("r-%012d", len(seen)+1)
		seen[id] = n
		return n
	})
	s = instanceID.ReplaceAllString(s, "$1…$2")
	return clockTime.ReplaceAllStringFunc(s, func(t string) string {
		h, _ := strconv.Atoi(t[:2])
		m, _ := strconv.Atoi(t[3:])
		d := (time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + shift) % (24 * time.Hour)
		if d < 0 {
			d += 24 * time.Hour
		}
		return fmt.Sprintf("%02d:%02d", int(d.Hours()), int(d.Minutes())%60)
	})
}
