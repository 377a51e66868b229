package main

import (
	"strings"
	"testing"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/slacktest"
)

// A request in a private channel does not appear in the App Home of
// someone who is not a member of it; its requester still sees it.
func TestHomeHidesPrivateChannelRequests(t *testing.T) {
	t.Parallel()
	const secret = "GSECRET"
	h := newHarness(t, nil, slacktest.WithChannel(slacktest.Channel{ID: secret, Private: true, Members: []string{alice, slacktest.BotUserID}}))
	in := h.addInstances("db", "cassandra", 1)[0]
	id, _ := h.submitIn(secret, in.Name)
	if home := h.openHome(alice, 1); !strings.Contains(home, id) {
		t.Errorf("Alice's Home lacks her own request %s:\n%s", id, home)
	}
	if home := h.openHome(bob, 1); strings.Contains(home, id) {
		t.Errorf("Bob is not in %s, but his Home shows its request %s:\n%s", secret, id, home)
	}
}

// A flood of App Home openings from someone who may not use the bot
// queues at most one refresh and does not delay an operator's click.
func TestHomeFloodDoesNotDelayClicks(t *testing.T) {
	t.Parallel()
	const mallory = "UMALLORY"
	h := newHarness(t, nil, slacktest.WithUser(slacktest.User{ID: mallory, Name: "mallory"}))
	in := h.addInstances("db", "cassandra", 1)[0]
	id, _, ack := h.plan(alice, in.Name)
	for range 150 {
		if _, err := h.slack.AppHomeOpened(h.ctx(), mallory, "home"); err != nil {
			t.Fatal(err)
		}
	}
	h.click(alice, "patch_cancel", id, ack.ResponseURL, 0)
	reply := h.reply(ack.ResponseURL, "cancelled")
	if strings.Contains(reply.Text, "busy") {
		t.Errorf("the click was refused as busy: %q", reply.Text)
	}
	if n := len(h.slack.CallsTo("views.publish")); n > 1 {
		t.Errorf("%d views.publish calls for someone not allowed, want at most 1", n)
	}
}

// A command in a channel the bot is not in is answered on its response_url
// with how to add the bot; nothing is planned or sent.
func TestCommandWhereTheBotIsNotIn(t *testing.T) {
	t.Parallel()
	const elsewhere = "CNOBOT"
	h := newHarness(t, nil, slacktest.WithChannel(slacktest.Channel{ID: elsewhere, Everyone: true}))
	in := h.addInstances("db", "cassandra", 1)[0]
	ack := h.slash(alice, elsewhere, in.Name)
	h.reply(ack.ResponseURL, "/invite @geminidb-patch")
	h.assertBatchCalls(0, "nothing is sent from a channel the bot is not in")
	for _, c := range h.slack.Calls() {
		if c.Channel == elsewhere && c.Method != "response_url" {
			t.Errorf("the bot called %s in %s", c.Method, elsewhere)
		}
	}
}
