package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/slacktest"
)

// Command is the slash command of the bot, as the manifest declares it.
const Command = "/geminidb-patch"

// Conversation is what happens in the demo channel: what people did (typed
// a command, clicked a button) and everything the bot sent, as the fake
// Slack recorded it. People act through it exactly as Slack would deliver
// their actions to the bot: slash commands and button clicks as Socket
// Mode envelopes, with response URLs minted for them.
//
// What each person sees is derived from the fake's call log each time
// (Entries), so nothing the bot sent can be missed or shown twice.
type Conversation struct {
	slack   *slacktest.Server
	outside func() int // the version of what else the page shows

	mu      sync.Mutex
	actions []action
	links   map[string]link // response URL → whom it answers
	nextEph int
	changes int
}

// kindSlackbot is an action that is only Slackbot's answer to a person.
const kindSlackbot = "slackbot"

// action is one thing a person did, at a place in the fake's call log.
type action struct {
	pos    int    // how many Slack calls were recorded before it
	kind   string // entryCommand, entryClick or kindSlackbot
	user   string
	text   string  // the command line, or the button's label
	dialog *dialog // the confirm dialog a click went through
	eph    int     // a command's ephemeral answer (its ack, or Slackbot's)
	reply  string  // that answer's text
	from   string  // who answers: "bot" (the ack) or "slackbot" (Slack itself)
}

// link is what a response URL answers: a person, and the ephemeral message
// a replace_original replaces (0 when there is none).
type link struct {
	user string
	eph  int
}

// dialog is a button's confirm dialog.
type dialog struct {
	Title   string `json:"title"`
	Text    string `json:"text"`
	Confirm string `json:"confirm"`
	Deny    string `json:"deny"`
}

func newConversation(s *slacktest.Server, outside func() int) *Conversation {
	return &Conversation{slack: s, outside: outside, links: map[string]link{}}
}

// Entry kinds.
const (
	entryCommand   = "command"   // a person typed a slash command
	entryClick     = "click"     // a person clicked a button
	entryEphemeral = "ephemeral" // a message only User sees (new, or replacing Eph)
	entryPost      = "post"      // a channel message
	entryReply     = "reply"     // a thread reply
	entryEdit      = "edit"      // a channel message or reply was edited
	entryDelete    = "delete"    // a message (ephemeral: Eph) was deleted
)

// Entry is one step of the conversation, in order.
type Entry struct {
	Kind     string
	User     string // who acted; for ephemeral messages, who sees them
	From     string // for ephemeral messages: "bot" or "slackbot"
	Eph      int    // ephemeral message ID
	Replaces bool   // the ephemeral message replaces Eph's content
	TS       string // channel message or reply
	ThreadTS string // the parent of a reply
	Text     string
	Blocks   json.RawMessage
	Dialog   *dialog // a click's confirm dialog
	Command  string  // for an ephemeral answer to a command: the command line
}

// Version changes whenever anything the page shows may have changed.
func (c *Conversation) Version() int {
	c.mu.Lock()
	n := c.changes
	c.mu.Unlock()
	return n + c.slack.CallCount() + c.outside()
}

// Entries replays the fake's call log and the people's actions, in order.
func (c *Conversation) Entries() []Entry {
	c.mu.Lock()
	actions := append([]action(nil), c.actions...)
	links := make(map[string]link, len(c.links))
	for k, v := range c.links {
		links[k] = v
	}
	calls := c.slack.Calls()
	c.mu.Unlock()

	var out []Entry
	commandOf := map[int]string{} // ephemeral ID → the command it answers
	emitActions := func(upTo int) {
		for len(actions) > 0 && actions[0].pos <= upTo {
			a := actions[0]
			actions = actions[1:]
			if a.kind != kindSlackbot {
				out = append(out, Entry{Kind: a.kind, User: a.user, Text: a.text, Dialog: a.dialog})
			}
			if a.eph != 0 {
				commandOf[a.eph] = a.text
				if a.reply != "" {
					out = append(out, Entry{Kind: entryEphemeral, User: a.user, From: a.from, Eph: a.eph, Text: a.reply, Command: a.text})
				}
			}
		}
	}
	for i, call := range calls {
		emitActions(i)
		if call.Status != 200 || call.Error != "" {
			continue // Slack refused it: nobody saw anything
		}
		switch call.Method {
		case "chat.postMessage":
			kind := entryPost
			if call.ThreadTS != "" && call.ThreadTS != call.TS {
				kind = entryReply
			}
			out = append(out, Entry{Kind: kind, User: slacktest.BotUserID, TS: call.TS, ThreadTS: call.ThreadTS, Text: call.Text, Blocks: call.Blocks})
		case "chat.update":
			out = append(out, Entry{Kind: entryEdit, TS: call.TS, Text: call.Text, Blocks: call.Blocks})
		case "chat.delete":
			out = append(out, Entry{Kind: entryDelete, TS: call.TS})
		case "chat.postEphemeral":
			out = append(out, Entry{Kind: entryEphemeral, User: call.User, From: "bot", Eph: callEph(i), Text: call.Text, Blocks: call.Blocks})
		case "response_url":
			l, ok := links[call.URL]
			if !ok {
				continue // not minted by the demo: nobody to show it to
			}
			e := Entry{Kind: entryEphemeral, User: l.user, From: "bot", Eph: l.eph, Text: call.Text, Blocks: call.Blocks, Command: commandOf[l.eph]}
			switch {
			case call.DeleteOriginal:
				if call.TS != "" {
					out = append(out, Entry{Kind: entryDelete, TS: call.TS})
				} else if l.eph != 0 {
					out = append(out, Entry{Kind: entryDelete, Eph: l.eph})
				}
			case call.ReplaceOriginal && call.TS != "":
				out = append(out, Entry{Kind: entryEdit, TS: call.TS, Text: call.Text, Blocks: call.Blocks})
			case call.ResponseType == "in_channel" && call.TS != "":
				out = append(out, Entry{Kind: entryPost, User: slacktest.BotUserID, TS: call.TS, ThreadTS: call.ThreadTS, Text: call.Text, Blocks: call.Blocks})
			case call.ReplaceOriginal && l.eph != 0:
				e.Replaces = true
				out = append(out, e)
			default:
				// A new ephemeral message; later replacements through the
				// same URL replace this one.
				e.Eph = callEph(i)
				commandOf[e.Eph] = commandOf[l.eph]
				links[call.URL] = link{user: l.user, eph: e.Eph}
				out = append(out, e)
			}
		}
	}
	emitActions(len(calls))
	return out
}

// callEph is the ID of an ephemeral message created by call i; IDs of
// messages the demo creates are small, so the two never collide.
func callEph(i int) int { return 1_000_000 + i }

// record appends an action at the current end of the call log.
func (c *Conversation) record(a action) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	a.pos = c.slack.CallCount()
	c.actions = append(c.actions, a)
	c.changes++
	return len(c.actions) - 1
}

// answer sets the ephemeral answer of action i.
func (c *Conversation) answer(i int, from, text string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.actions[i].from, c.actions[i].reply = from, text
	c.changes++
}

// Command runs a line typed into the message box as user, as Slack would:
// a /geminidb-patch command goes to the bot as a slash_commands envelope,
// and the ack's text becomes the ephemeral answer that the bot's response
// URL posts then replace. Other input is answered by Slackbot, as in Slack.
func (c *Conversation) Command(ctx context.Context, user, line string) error {
	line = strings.TrimSpace(line)
	if line == "" {
		return nil
	}
	name, text, _ := strings.Cut(line, " ")
	text = strings.TrimSpace(text)
	c.mu.Lock()
	c.nextEph++
	eph := c.nextEph
	c.mu.Unlock()
	if !strings.HasPrefix(name, "/") || name != Command {
		i := c.record(action{kind: entryCommand, user: user, text: line, eph: eph})
		msg := fmt.Sprintf("`%s` is not a valid command here: this channel has one app, so try `%s help`.", name, Command)
		if !strings.HasPrefix(name, "/") {
			msg = fmt.Sprintf("In this demo only the app's slash command does something: try `%s help`.", Command)
		}
		c.answer(i, "slackbot", msg)
		return nil
	}
	url := c.slack.NewResponseURL(Channel.ID, "")
	c.mu.Lock()
	c.links[url] = link{user: user, eph: eph}
	c.mu.Unlock()
	i := c.record(action{kind: entryCommand, user: user, text: line, eph: eph})
	p := person(user)
	ack, err := c.slack.SlashCommand(ctx, slacktest.SlashCommand{
		UserID: user, UserName: p.Name, ChannelID: Channel.ID, ChannelName: Channel.Name,
		Command: Command, Text: escapeMentions(text), ResponseURL: url,
	})
	if err != nil {
		c.answer(i, "slackbot", slackFailure(err))
		return nil
	}
	var payload struct {
		Text string `json:"text"`
	}
	if len(ack.Payload) > 0 && json.Unmarshal(ack.Payload, &payload) == nil && payload.Text != "" {
		c.answer(i, "bot", payload.Text)
	}
	return nil
}

// slackFailure is what Slack tells a person whose command the app did not take.
func slackFailure(err error) string {
	if errors.Is(err, slacktest.ErrNoConnection) {
		return fmt.Sprintf("`%s` failed with the error \"dispatch_failed\": the app is not connected (is the bot restarting?).", Command)
	}
	return fmt.Sprintf("`%s` failed with the error \"operation_timeout\": the app did not answer in time.", Command)
}

// Target names a message with buttons: an ephemeral message (Eph) or a
// channel message or reply (TS).
type Target struct {
	Eph int    `json:"eph,omitempty"`
	TS  string `json:"ts,omitempty"`
}

// ErrNoButton means the clicked button is not (or no longer) on the message.
var ErrNoButton = errors.New("that button is not on the message (any more)")

// Click presses a button as user, as Slack would: a block_actions payload
// in an interactive envelope, carrying a fresh response URL for the
// message. The button must be on the message as user sees it now; a
// button with a confirm dialog counts as confirmed.
func (c *Conversation) Click(ctx context.Context, user string, t Target, actionID, value string) error {
	view := c.View(user)
	msg, ok := view.find(t)
	if !ok {
		return ErrNoButton
	}
	b, blockID, ok := findButton(msg.Blocks, actionID, value)
	if !ok {
		return ErrNoButton
	}
	var url string
	if t.Eph != 0 {
		url = c.slack.NewResponseURL(Channel.ID, "")
	} else {
		url = c.slack.NewResponseURL(Channel.ID, t.TS)
	}
	c.mu.Lock()
	c.links[url] = link{user: user, eph: t.Eph}
	c.mu.Unlock()
	c.record(action{kind: entryClick, user: user, text: b.Text.Text, dialog: b.Confirm.dialog()})
	p := person(user)
	_, err := c.slack.BlockAction(ctx, slacktest.BlockAction{
		UserID: user, UserName: p.Name, ChannelID: Channel.ID, ChannelName: Channel.Name,
		ActionID: actionID, BlockID: blockID, Value: value, Text: b.Text.Text,
		MessageTS: t.TS, ThreadTS: msg.ThreadTS, Ephemeral: t.Eph != 0, ResponseURL: url,
	}, 0)
	if err != nil {
		c.mu.Lock()
		c.nextEph++
		eph := c.nextEph
		c.mu.Unlock()
		i := c.record(action{kind: kindSlackbot, user: user, eph: eph})
		c.answer(i, "slackbot", strings.Replace(slackFailure(err), "`"+Command+"`", "Your click", 1))
	}
	return nil
}

// button is a Block Kit button, as much as the demo needs of it.
type button struct {
	Type     string   `json:"type"`
	ActionID string   `json:"action_id"`
	Value    string   `json:"value"`
	Text     textObj  `json:"text"`
	Style    string   `json:"style"`
	Confirm  *confirm `json:"confirm"`
}

type textObj struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

type confirm struct {
	Title   textObj `json:"title"`
	Text    textObj `json:"text"`
	Confirm textObj `json:"confirm"`
	Deny    textObj `json:"deny"`
}

func (c *confirm) dialog() *dialog {
	if c == nil {
		return nil
	}
	return &dialog{Title: c.Title.Text, Text: c.Text.Text, Confirm: orDefault(c.Confirm.Text, "Yes"), Deny: orDefault(c.Deny.Text, "Cancel")}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// findButton finds the button with actionID and value in blocks, and the
// block_id of its block.
func findButton(blocks json.RawMessage, actionID, value string) (button, string, bool) {
	for _, b := range buttons(blocks) {
		if b.ActionID == actionID && b.Value == value {
			return b.button, b.blockID, true
		}
	}
	return button{}, "", false
}

// placedButton is a button and the block_id of its block.
type placedButton struct {
	button
	blockID string
}

// buttons lists the buttons in blocks (actions elements and section
// accessories), in order. Other elements are skipped.
func buttons(blocks json.RawMessage) []placedButton {
	var bs []struct {
		BlockID   string            `json:"block_id"`
		Elements  []json.RawMessage `json:"elements"`
		Accessory json.RawMessage   `json:"accessory"`
	}
	if json.Unmarshal(blocks, &bs) != nil {
		return nil
	}
	var out []placedButton
	for _, b := range bs {
		els := b.Elements
		if len(b.Accessory) > 0 {
			els = append(els, b.Accessory)
		}
		for _, raw := range els {
			var e button
			if json.Unmarshal(raw, &e) == nil && e.Type == "button" {
				out = append(out, placedButton{e, b.BlockID})
			}
		}
	}
	return out
}

// escapeMentions turns "@ben" into "<@U02BEN|ben>" for each of the demo's
// people, as Slack does in a slash command whose escaping is on (the
// manifest's should_escape).
func escapeMentions(text string) string {
	words := strings.Split(text, " ")
	for i, w := range words {
		for _, p := range People {
			if w == "@"+p.Name {
				words[i] = "<@" + p.ID + "|" + p.Name + ">"
			}
		}
	}
	return strings.Join(words, " ")
}

// person finds one of the demo's people by ID.
func person(id string) Person {
	for _, p := range People {
		if p.ID == id {
			return p
		}
	}
	return Person{ID: id, Name: strings.ToLower(id), RealName: id}
}

// ViewMessage is a message as one person sees it now.
type ViewMessage struct {
	Kind     string          `json:"kind"` // "message" or "ephemeral"
	TS       string          `json:"ts,omitempty"`
	ThreadTS string          `json:"thread_ts,omitempty"`
	Eph      int             `json:"eph,omitempty"`
	User     string          `json:"user"` // the poster's ID: the bot's, or "USLACKBOT"
	Text     string          `json:"text"`
	Blocks   json.RawMessage `json:"blocks,omitempty"`
	Edited   bool            `json:"edited,omitempty"`
	Command  string          `json:"command,omitempty"` // the command an ephemeral answer belongs to
	Replies  []ViewMessage   `json:"replies,omitempty"`
}

// View is the channel as one person sees it: channel messages with their
// threads, and that person's ephemeral messages, in order.
type View struct {
	Timeline []ViewMessage `json:"timeline"`
}

// slackbotID is the user ID Slack's own messages come from.
const slackbotID = "USLACKBOT"

// View folds the conversation into what user sees now.
func (c *Conversation) View(user string) View {
	var order []*ViewMessage
	byTS := map[string]*ViewMessage{}
	byEph := map[int]*ViewMessage{}
	for _, e := range c.Entries() {
		switch e.Kind {
		case entryPost:
			m := &ViewMessage{Kind: "message", TS: e.TS, User: e.User, Text: e.Text, Blocks: e.Blocks}
			byTS[e.TS] = m
			order = append(order, m)
		case entryReply:
			parent := byTS[e.ThreadTS]
			if parent == nil {
				continue
			}
			parent.Replies = append(parent.Replies, ViewMessage{Kind: "message", TS: e.TS, ThreadTS: e.ThreadTS, User: e.User, Text: e.Text, Blocks: e.Blocks})
		case entryEdit:
			if m := findTS(order, e.TS); m != nil {
				m.Text, m.Blocks, m.Edited = e.Text, e.Blocks, true
			}
		case entryDelete:
			if e.TS != "" {
				delete(byTS, e.TS)
				order = removeMessage(order, func(m *ViewMessage) bool { return m.TS == e.TS })
				for _, m := range order {
					m.Replies = slices.DeleteFunc(m.Replies, func(r ViewMessage) bool { return r.TS == e.TS })
				}
			} else {
				delete(byEph, e.Eph)
				order = removeMessage(order, func(m *ViewMessage) bool { return m.Kind == "ephemeral" && m.Eph == e.Eph })
			}
		case entryEphemeral:
			if e.User != user {
				continue
			}
			from := slacktest.BotUserID
			if e.From == "slackbot" {
				from = slackbotID
			}
			if m := byEph[e.Eph]; m != nil && e.Replaces {
				m.Text, m.Blocks, m.User = e.Text, e.Blocks, from
				continue
			}
			m := &ViewMessage{Kind: "ephemeral", Eph: e.Eph, User: from, Text: e.Text, Blocks: e.Blocks, Command: e.Command}
			byEph[e.Eph] = m
			order = append(order, m)
		}
	}
	v := View{Timeline: make([]ViewMessage, 0, len(order))}
	for _, m := range order {
		v.Timeline = append(v.Timeline, *m)
	}
	return v
}

// findTS finds the message or reply with ts.
func findTS(order []*ViewMessage, ts string) *ViewMessage {
	for _, m := range order {
		if m.TS == ts {
			return m
		}
		for i := range m.Replies {
			if m.Replies[i].TS == ts {
				return &m.Replies[i]
			}
		}
	}
	return nil
}

func removeMessage(order []*ViewMessage, match func(*ViewMessage) bool) []*ViewMessage {
	out := order[:0]
	for _, m := range order {
		if !match(m) {
			out = append(out, m)
		}
	}
	return out
}

// find returns the message t names, as shown in v.
func (v View) find(t Target) (ViewMessage, bool) {
	for _, m := range v.Timeline {
		if t.Eph != 0 && m.Kind == "ephemeral" && m.Eph == t.Eph {
			return m, true
		}
		if t.TS != "" && m.TS == t.TS {
			return m, true
		}
		for _, r := range m.Replies {
			if t.TS != "" && r.TS == t.TS {
				return r, true
			}
		}
	}
	return ViewMessage{}, false
}
