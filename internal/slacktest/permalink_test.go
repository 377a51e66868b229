package slacktest_test

import (
	"strings"
	"testing"

	"github.com/slack-go/slack"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/slacktest"
)

// WithPermalinkBase puts permalinks under another base (the demo's page),
// keeping Slack's path and query.
func TestPermalinkBase(t *testing.T) {
	t.Parallel()
	s := slacktest.New(t, slacktest.WithPermalinkBase("http://127.0.0.1:8080/"))
	ctx := testContext(t)
	api := newAPI(s, s.BotToken())
	_, ts, err := api.PostMessageContext(ctx, "C1", slack.MsgOptionText("parent", false))
	if err != nil {
		t.Fatal(err)
	}
	_, reply, err := api.PostMessageContext(ctx, "C1", slack.MsgOptionText("reply", false), slack.MsgOptionTS(ts))
	if err != nil {
		t.Fatal(err)
	}
	link, err := api.GetPermalinkContext(ctx, &slack.PermalinkParameters{Channel: "C1", Ts: ts})
	if want := "http://127.0.0.1:8080/archives/C1/p" + strings.ReplaceAll(ts, ".", ""); err != nil || link != want {
		t.Errorf("got %q, %v; want %q", link, err, want)
	}
	link, err = api.GetPermalinkContext(ctx, &slack.PermalinkParameters{Channel: "C1", Ts: reply})
	if want := "http://127.0.0.1:8080/archives/C1/p" + strings.ReplaceAll(reply, ".", "") + "?thread_ts=" + ts + "&cid=C1"; err != nil || link != want {
		t.Errorf("thread reply: got %q, %v; want %q", link, err, want)
	}
}
