package slacktest_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/slackevents"
	"github.com/slack-go/slack/socketmode"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/slacktest"
)

func homeView(n int, text string) slack.HomeTabViewRequest {
	v := slack.HomeTabViewRequest{Type: slack.VTHomeTab}
	for i := range n {
		v.Blocks.BlockSet = append(v.Blocks.BlockSet, slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, fmt.Sprintf("%s %d", text, i), false, false), nil, nil))
	}
	return v
}

// views.publish keeps a user's Home tab, checks it against Slack's limits
// for views (100 blocks, not a message's 50) and refuses a stale hash.
func TestViewsPublish(t *testing.T) {
	t.Parallel()
	s := slacktest.New(t)
	ctx := testContext(t)
	api := newAPI(s, s.BotToken())

	res, err := api.PublishViewContext(ctx, slack.PublishViewContextRequest{UserID: "U1", View: homeView(100, "*row*")})
	if err != nil {
		t.Fatalf("a Home tab of 100 blocks: %v", err)
	}
	v, ok := s.HomeView("U1")
	if !ok || v.Publishes != 1 || v.ID != res.View.ID || v.Hash != res.View.Hash || !strings.Contains(v.AllText(), "*row* 99") {
		t.Fatalf("HomeView: got %+v, %v; answer %+v", v, ok, res.View)
	}
	if _, ok := s.HomeView("U2"); ok {
		t.Error("HomeView of a user nothing was published for: got one")
	}
	if c := s.CallsTo("views.publish"); len(c) != 1 || c[0].User != "U1" || len(c[0].Blocks) == 0 {
		t.Errorf("calls: got %+v", c)
	}

	tests := []struct {
		name string
		req  slack.PublishViewContextRequest
		want string
	}{
		{"101 blocks", slack.PublishViewContextRequest{UserID: "U1", View: homeView(101, "row")}, "invalid_arguments"},
		{"long text", slack.PublishViewContextRequest{UserID: "U1", View: homeView(1, strings.Repeat("x", 3001))}, "invalid_arguments"},
		{"a modal", slack.PublishViewContextRequest{UserID: "U1", View: slack.HomeTabViewRequest{Type: slack.VTModal, Blocks: homeView(1, "x").Blocks}}, "invalid_arguments"},
		{"long private metadata", slack.PublishViewContextRequest{UserID: "U1", View: slack.HomeTabViewRequest{Type: slack.VTHomeTab, Blocks: homeView(1, "x").Blocks, PrivateMetadata: strings.Repeat("m", 3001)}}, "invalid_arguments"},
		{"not a user", slack.PublishViewContextRequest{UserID: "C1", View: homeView(1, "x")}, "user_not_found"},
		{"stale hash", slack.PublishViewContextRequest{UserID: "U1", View: homeView(1, "x"), Hash: new("1.stale")}, "hash_conflict"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := api.PublishViewContext(ctx, tt.req)
			if got := slackError(err); got != tt.want {
				t.Errorf("got %v, want %s", err, tt.want)
			}
		})
	}
	if v2, _ := s.HomeView("U1"); v2.Publishes != 1 {
		t.Errorf("a refused publish changed the Home tab: %+v", v2)
	}
	if _, err := api.PublishViewContext(ctx, slack.PublishViewContextRequest{UserID: "U1", View: homeView(2, "new"), Hash: &v.Hash}); err != nil {
		t.Fatalf("publish with the current hash: %v", err)
	}
	if v2, _ := s.HomeView("U1"); v2.Publishes != 2 || v2.ID != v.ID || v2.Hash == v.Hash || !strings.Contains(v2.AllText(), "new 1") {
		t.Errorf("republished: got %+v", v2)
	}
}

func TestGetPermalink(t *testing.T) {
	t.Parallel()
	s := slacktest.New(t)
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
	if want := "https://fake.slack.com/archives/C1/p" + strings.ReplaceAll(ts, ".", ""); err != nil || link != want {
		t.Errorf("got %q, %v; want %q", link, err, want)
	}
	link, err = api.GetPermalinkContext(ctx, &slack.PermalinkParameters{Channel: "C1", Ts: reply})
	if err != nil || !strings.Contains(link, "?thread_ts="+ts+"&cid=C1") {
		t.Errorf("thread reply: got %q, %v; want the thread named", link, err)
	}
	for _, tt := range []struct{ channel, ts, want string }{{"C1", "1.000001", "message_not_found"}, {"", ts, "channel_not_found"}} {
		if _, err := api.GetPermalinkContext(ctx, &slack.PermalinkParameters{Channel: tt.channel, Ts: tt.ts}); slackError(err) != tt.want {
			t.Errorf("channel %q ts %q: got %v, want %s", tt.channel, tt.ts, err, tt.want)
		}
	}
}

// app_home_opened reaches slack-go's Socket Mode client as an Events API
// event it parses, carrying the Home tab last published.
func TestAppHomeOpened(t *testing.T) {
	t.Parallel()
	s := slacktest.New(t)
	acked := func(c *socketmode.Client, evt socketmode.Event) {
		if evt.Type == socketmode.EventTypeEventsAPI {
			_ = c.Ack(*evt.Request)
		}
	}
	b := startBot(t, s, acked)
	ctx := testContext(t)
	b.waitEvent(t, socketmode.EventTypeHello)

	for i, tab := range []string{"home", "home", "messages"} {
		if i == 1 {
			if _, err := b.api.PublishViewContext(ctx, slack.PublishViewContextRequest{UserID: "U1", View: homeView(1, "published")}); err != nil {
				t.Fatal(err)
			}
		}
		ack, err := s.AppHomeOpened(ctx, "U1", tab)
		if err != nil {
			t.Fatalf("AppHomeOpened: %v", err)
		}
		evt := b.waitEvent(t, socketmode.EventTypeEventsAPI)
		if evt.Request.EnvelopeID != ack.EnvelopeID {
			t.Errorf("envelope %s acked, %s received", ack.EnvelopeID, evt.Request.EnvelopeID)
		}
		outer, ok := evt.Data.(slackevents.EventsAPIEvent)
		if !ok || outer.Type != slackevents.CallbackEvent || outer.TeamID != slacktest.TeamID {
			t.Fatalf("event data: got %#v", evt.Data)
		}
		inner, ok := outer.InnerEvent.Data.(*slackevents.AppHomeOpenedEvent)
		if !ok || inner.User != "U1" || inner.Tab != tab || !strings.HasPrefix(inner.Channel, "D") {
			t.Fatalf("inner event: got %#v", outer.InnerEvent.Data)
		}
		hasView := inner.View != nil && len(inner.View.Blocks.BlockSet) == 1
		if hasView != (i == 1) {
			t.Errorf("open %d (%s): event carries a view: %v, want %v", i, tab, hasView, i == 1)
		}
	}
	raw, _ := json.Marshal(s.Violations())
	if v := s.Violations(); len(v) != 0 {
		t.Errorf("violations: %s", raw)
	}
}
