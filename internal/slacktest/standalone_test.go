package slacktest_test

import (
	"net/http"
	"testing"

	"github.com/slack-go/slack"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/slacktest"
)

func TestNewServerOutsideATest(t *testing.T) {
	s, err := slacktest.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newAPI(s, s.BotToken()).AuthTestContext(testContext(t)); err != nil {
		t.Fatalf("auth.test: %v", err)
	}
	s.Close()
	s.Close() // a second Close is harmless
	if _, err := http.Get(s.APIURL() + "auth.test"); err == nil {
		t.Error("the fake still answers after Close")
	}
}

// A response URL minted before the command is the one its payload carries,
// and its in_channel and replace_original posts act on what it was minted for.
func TestNewResponseURL(t *testing.T) {
	t.Parallel()
	s := slacktest.New(t)
	b := startBot(t, s, nil)
	ctx := testContext(t)
	if err := s.WaitConnections(ctx, 1); err != nil {
		t.Fatal(err)
	}
	url := s.NewResponseURL("C1", "")
	ack, err := s.SlashCommand(ctx, slacktest.SlashCommand{UserID: "U1", ChannelID: "C1", Command: "/x", ResponseURL: url})
	if err != nil {
		t.Fatal(err)
	}
	if ack.ResponseURL != url {
		t.Errorf("got response URL %s, want the minted %s", ack.ResponseURL, url)
	}
	if _, _, _, err := b.api.SendMessageContext(ctx, "", slack.MsgOptionResponseURL(url, slack.ResponseTypeInChannel), slack.MsgOptionText("hello", false)); err != nil {
		t.Fatal(err)
	}
	msgs := s.Messages("C1")
	if len(msgs) != 1 || msgs[0].Text != "hello" {
		t.Fatalf("got channel %+v, want the in_channel response", msgs)
	}

	edit := s.NewResponseURL("C1", msgs[0].TS)
	if _, _, _, err := b.api.SendMessageContext(ctx, "", slack.MsgOptionReplaceOriginal(edit), slack.MsgOptionText("edited", false)); err != nil {
		t.Fatal(err)
	}
	if got := s.Messages("C1"); len(got) != 1 || got[0].Text != "edited" || got[0].Updates != 1 {
		t.Errorf("got channel %+v, want the message replaced", got)
	}
}

func TestCallCount(t *testing.T) {
	t.Parallel()
	s := slacktest.New(t)
	if _, err := newAPI(s, s.BotToken()).AuthTestContext(testContext(t)); err != nil {
		t.Fatal(err)
	}
	if got, want := s.CallCount(), len(s.Calls()); got != 1 || got != want {
		t.Errorf("got CallCount %d, want %d (len of Calls)", got, want)
	}
}
