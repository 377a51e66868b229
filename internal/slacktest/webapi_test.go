package slacktest_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/slack-go/slack"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/slacktest"
)

func newAPI(s *slacktest.Server, token string) *slack.Client {
	return slack.New(token, slack.OptionAPIURL(s.APIURL()))
}

// slackError is the Slack error code in err, or "".
func slackError(err error) string {
	var e slack.SlackErrorResponse
	if errors.As(err, &e) {
		return e.Err
	}
	return ""
}

func TestAuth(t *testing.T) {
	t.Parallel()
	s := slacktest.New(t)
	ctx := testContext(t)

	got, err := newAPI(s, s.BotToken()).AuthTestContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.UserID != slacktest.BotUserID || got.TeamID != slacktest.TeamID || got.BotID != slacktest.BotID {
		t.Errorf("auth.test: got %+v", got)
	}

	tests := []struct {
		name, token, want string
	}{
		{"wrong token", "xoxb-wrong", "invalid_auth"},
		{"no token", "", "not_authed"},
		{"app token", s.AppToken(), "not_allowed_token_type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := newAPI(s, tt.token).AuthTestContext(ctx)
			if got := slackError(err); got != tt.want {
				t.Errorf("got %v, want %s", err, tt.want)
			}
		})
	}
}

func TestPostUpdateThread(t *testing.T) {
	t.Parallel()
	s := slacktest.New(t)
	ctx := testContext(t)
	api := newAPI(s, s.BotToken())

	blocks := slack.MsgOptionBlocks(
		slack.NewHeaderBlock(slack.NewTextBlockObject(slack.PlainTextType, "Patch", false, false)),
		slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, "*2* instances", false, false), nil, nil),
	)
	ch, parent, err := api.PostMessageContext(ctx, "C1", slack.MsgOptionText("fallback", false), blocks)
	if err != nil {
		t.Fatal(err)
	}
	if ch != "C1" || parent == "" {
		t.Fatalf("post: got channel %q ts %q", ch, parent)
	}
	_, r1, err := api.PostMessageContext(ctx, "C1", slack.MsgOptionText("job 1", false), slack.MsgOptionTS(parent))
	if err != nil {
		t.Fatal(err)
	}
	_, r2, err := api.PostMessageContext(ctx, "C1", slack.MsgOptionText("job 2", false), slack.MsgOptionTS(parent))
	if err != nil {
		t.Fatal(err)
	}
	if !(parent < r1 && r1 < r2) {
		t.Errorf("timestamps not increasing: %s %s %s", parent, r1, r2)
	}
	if _, _, _, err := api.UpdateMessageContext(ctx, "C1", parent, slack.MsgOptionText("done", false)); err != nil {
		t.Fatal(err)
	}

	msgs := s.Messages("C1")
	if len(msgs) != 1 {
		t.Fatalf("Messages: got %d, want 1 top-level message", len(msgs))
	}
	m := msgs[0]
	if m.TS != parent || m.Text != "done" || m.Updates != 1 || m.User != slacktest.BotUserID {
		t.Errorf("parent after update: got %+v", m)
	}
	// chat.update without blocks keeps them, as Slack does.
	if got, want := m.AllText(), "done\nPatch\n*2* instances"; got != want {
		t.Errorf("AllText: got %q, want %q", got, want)
	}
	thread := s.Thread("C1", parent)
	if len(thread) != 2 || thread[0].Text != "job 1" || thread[1].Text != "job 2" || thread[1].ThreadTS != parent {
		t.Errorf("Thread: got %+v", thread)
	}

	_, _, _, err = api.UpdateMessageContext(ctx, "C1", "1.000000", slack.MsgOptionText("x", false))
	if got := slackError(err); got != "message_not_found" {
		t.Errorf("update of unknown ts: got %v, want message_not_found", err)
	}
	_, _, _, err = api.UpdateMessageContext(ctx, "C2", parent, slack.MsgOptionText("x", false))
	if got := slackError(err); got != "message_not_found" {
		t.Errorf("update in another channel: got %v, want message_not_found", err)
	}

	posts := s.CallsTo("chat.postMessage")
	if len(posts) != 3 || posts[0].TS != parent || posts[1].ThreadTS != parent || len(posts[0].Blocks) == 0 {
		t.Errorf("recorded posts: got %+v", posts)
	}
	if posts[0].Form.Get("token") != "" {
		t.Error("recorded form keeps the token")
	}
	call, err := s.WaitCall(ctx, "chat.update", func(c slacktest.Call) bool { return c.Error != "" })
	if err != nil || call.Error != "message_not_found" {
		t.Errorf("WaitCall: got %+v, %v", call, err)
	}
	if v := s.Violations(); len(v) != 0 {
		t.Errorf("violations: %q", v)
	}

	if _, _, err := api.PostMessageContext(ctx, "C1", slack.MsgOptionText("orphan", false), slack.MsgOptionTS("1.000001")); err != nil {
		t.Fatal(err)
	}
	if v := s.Violations(); len(v) != 1 || !strings.Contains(v[0], "thread_ts 1.000001") {
		t.Errorf("violations after a reply to nothing: got %q", v)
	}
}

func TestEphemeralGroupsUsers(t *testing.T) {
	t.Parallel()
	s := slacktest.New(t, slacktest.WithUserGroup("S1", "U1", "U2"), slacktest.WithUser(slacktest.User{ID: "U7", Name: "ann", RealName: "Ann"}))
	ctx := testContext(t)
	api := newAPI(s, s.BotToken())

	ts, err := api.PostEphemeralContext(ctx, "C1", "U1", slack.MsgOptionText("only you", false))
	if err != nil || ts == "" {
		t.Fatalf("postEphemeral: %q, %v", ts, err)
	}
	if got := s.Messages("C1"); len(got) != 0 {
		t.Errorf("ephemeral message in channel state: %+v", got)
	}
	if c := s.CallsTo("chat.postEphemeral"); len(c) != 1 || c[0].User != "U1" || c[0].TS != ts {
		t.Errorf("recorded: %+v", c)
	}

	members, err := api.GetUserGroupMembersContext(ctx, "S1")
	if err != nil || strings.Join(members, ",") != "U1,U2" {
		t.Errorf("usergroups.users.list: got %v, %v", members, err)
	}
	_, err = api.GetUserGroupMembersContext(ctx, "S9")
	if got := slackError(err); got != "no_such_subteam" {
		t.Errorf("unknown group: got %v, want no_such_subteam", err)
	}

	u, err := api.GetUserInfoContext(ctx, "U7")
	if err != nil || u.Name != "ann" || u.RealName != "Ann" {
		t.Errorf("users.info: got %+v, %v", u, err)
	}
	if u, err := api.GetUserInfoContext(ctx, "U8"); err != nil || u.ID != "U8" {
		t.Errorf("users.info for an unconfigured user: got %+v, %v", u, err)
	}
	_, err = api.GetUserInfoContext(ctx, "nobody")
	if got := slackError(err); got != "user_not_found" {
		t.Errorf("users.info nobody: got %v, want user_not_found", err)
	}
}

func TestUnknownMethodAndJSONBody(t *testing.T) {
	t.Parallel()
	s := slacktest.New(t)
	ctx := testContext(t)

	post := func(method, ctype, body string) map[string]any {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.APIURL()+method, strings.NewReader(body))
		req.Header.Set("Content-Type", ctype)
		req.Header.Set("Authorization", "Bearer "+s.BotToken())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	if got := post("views.open", "application/x-www-form-urlencoded", ""); got["error"] != "unknown_method" {
		t.Errorf("unknown method: got %v", got)
	}
	got := post("chat.postMessage", "application/json", `{"channel":"C1","text":"hi","blocks":[{"type":"divider"}]}`)
	if got["ok"] != true {
		t.Fatalf("JSON post: got %v", got)
	}
	c := s.CallsTo("chat.postMessage")[0]
	if c.Channel != "C1" || c.Text != "hi" || string(c.Blocks) != `[{"type":"divider"}]` {
		t.Errorf("recorded JSON post: got %+v", c)
	}
}

func TestFailAndRateLimit(t *testing.T) {
	t.Parallel()
	s := slacktest.New(t)
	ctx := testContext(t)
	api := newAPI(s, s.BotToken())
	post := func() error {
		_, _, err := api.PostMessageContext(ctx, "C1", slack.MsgOptionText("x", false))
		return err
	}

	s.FailMethod("chat.postMessage", "channel_not_found", 1)
	if got := slackError(post()); got != "channel_not_found" {
		t.Errorf("first post: got %q, want channel_not_found", got)
	}
	if err := post(); err != nil {
		t.Errorf("second post: %v", err)
	}

	s.RateLimit("chat.postMessage", 1500*time.Millisecond, 1)
	var rl *slack.RateLimitedError
	if err := post(); !errors.As(err, &rl) || rl.RetryAfter != 2*time.Second {
		t.Errorf("rate limited post: got %v, want RetryAfter 2s", err)
	}
	if err := post(); err != nil {
		t.Errorf("post after the limit: %v", err)
	}
	if got, want := len(s.Messages("C1")), 2; got != want {
		t.Errorf("messages: got %d, want %d", got, want)
	}
}

func section(text string) slack.Block {
	return slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, text, false, false), nil, nil)
}

func TestMessageLimits(t *testing.T) {
	t.Parallel()
	s := slacktest.New(t)
	ctx := testContext(t)
	api := newAPI(s, s.BotToken())

	many := func(n int) []slack.Block {
		var out []slack.Block
		for range n {
			out = append(out, slack.NewDividerBlock())
		}
		return out
	}
	button := func(value string) slack.Block {
		return slack.NewActionBlock("b", slack.NewButtonBlockElement("patch_confirm", value,
			slack.NewTextBlockObject(slack.PlainTextType, "Confirm", false, false)))
	}
	context := func(text string) slack.Block {
		return slack.NewContextBlock("", slack.NewTextBlockObject(slack.MarkdownType, text, false, false))
	}
	x := strings.Repeat
	tests := []struct {
		name   string
		text   string
		blocks []slack.Block
		want   string
	}{
		{name: "50 blocks", blocks: many(50)},
		{name: "51 blocks", blocks: many(51), want: "invalid_blocks"},
		{name: "section 3000", blocks: []slack.Block{section(x("é", 3000))}},
		{name: "section 3001", blocks: []slack.Block{section(x("a", 3001))}, want: "invalid_blocks"},
		{name: "empty section text", blocks: []slack.Block{section("")}, want: "invalid_blocks"},
		{name: "context 3001", blocks: []slack.Block{context(x("a", 3001))}, want: "invalid_blocks"},
		{name: "button value 2000", blocks: []slack.Block{button(x("v", 2000))}},
		{name: "button value 2001", blocks: []slack.Block{button(x("v", 2001))}, want: "invalid_blocks"},
		{name: "duplicate block_id", blocks: []slack.Block{button("1"), button("2")}, want: "invalid_blocks"},
		{name: "text 40000", text: x("t", 40000)},
		{name: "text 40001", text: x("t", 40001), want: "msg_too_long"},
		{name: "nothing", want: "no_text"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := []slack.MsgOption{slack.MsgOptionText(tt.text, false)}
			if tt.blocks != nil {
				opts = append(opts, slack.MsgOptionBlocks(tt.blocks...))
			}
			_, _, err := api.PostMessageContext(ctx, "C1", opts...)
			if got := slackError(err); got != tt.want {
				t.Errorf("chat.postMessage: got %v, want %q", err, tt.want)
			}
			if tt.want == "invalid_blocks" {
				var e slack.SlackErrorResponse
				errors.As(err, &e)
				if len(e.ResponseMetadata.Messages) == 0 || !strings.Contains(e.ResponseMetadata.Messages[0], "json-pointer:/blocks") {
					t.Errorf("response_metadata: got %q, want Slack-style details", e.ResponseMetadata.Messages)
				}
			}
		})
	}
}

func TestResponseURLs(t *testing.T) {
	t.Parallel()
	s := slacktest.New(t)
	b := startBot(t, s, nil)
	ctx := testContext(t)
	api := b.api
	if err := s.WaitConnections(ctx, 1); err != nil {
		t.Fatal(err)
	}

	// Slash command: an ephemeral answer, then one in the channel.
	ack, err := s.SlashCommand(ctx, slacktest.SlashCommand{UserID: "U1", ChannelID: "C1", Command: "/x"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := api.SendMessageContext(ctx, "", slack.MsgOptionResponseURL(ack.ResponseURL, slack.ResponseTypeEphemeral),
		slack.MsgOptionText("plan", false), slack.MsgOptionBlocks(section("plan details"))); err != nil {
		t.Fatalf("ephemeral response: %v", err)
	}
	if got := s.Messages("C1"); len(got) != 0 {
		t.Errorf("ephemeral response in channel state: %+v", got)
	}
	if _, _, _, err := api.SendMessageContext(ctx, "", slack.MsgOptionResponseURL(ack.ResponseURL, slack.ResponseTypeInChannel),
		slack.MsgOptionText("patching", false)); err != nil {
		t.Fatalf("in_channel response: %v", err)
	}
	msgs := s.Messages("C1")
	if len(msgs) != 1 || msgs[0].Text != "patching" {
		t.Fatalf("channel after in_channel response: %+v", msgs)
	}
	calls := s.CallsTo("response_url")
	if len(calls) != 2 || calls[0].ResponseType != "ephemeral" || calls[0].AllText() != "plan\nplan details" || calls[0].URL != ack.ResponseURL {
		t.Errorf("recorded responses: %+v", calls)
	}

	// Button on the channel message: replace_original updates it.
	click, err := s.BlockAction(ctx, slacktest.BlockAction{UserID: "U1", ChannelID: "C1", ActionID: "patch_cancel", MessageTS: msgs[0].TS}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := api.SendMessageContext(ctx, "", slack.MsgOptionReplaceOriginal(click.ResponseURL), slack.MsgOptionText("cancelled", false)); err != nil {
		t.Fatalf("replace_original: %v", err)
	}
	if m := s.Messages("C1")[0]; m.Text != "cancelled" || m.Updates != 1 {
		t.Errorf("after replace_original: %+v", m)
	}

	// Limits apply; Slack answers 400.
	_, _, _, err = api.SendMessageContext(ctx, "", slack.MsgOptionResponseURL(click.ResponseURL, slack.ResponseTypeEphemeral),
		slack.MsgOptionBlocks(section(strings.Repeat("a", 3001))))
	var sc slack.StatusCodeError
	if !errors.As(err, &sc) || sc.Code != http.StatusBadRequest {
		t.Errorf("oversized response: got %v, want HTTP 400", err)
	}
	if last := s.CallsTo("response_url"); last[len(last)-1].Error != "invalid_blocks" {
		t.Errorf("recorded error: got %q, want invalid_blocks", last[len(last)-1].Error)
	}

	// Five uses per URL; delete_original removes the message.
	for range 3 {
		if _, _, _, err := api.SendMessageContext(ctx, "", slack.MsgOptionResponseURL(click.ResponseURL, slack.ResponseTypeEphemeral), slack.MsgOptionText("x", false)); err != nil {
			t.Fatal(err)
		}
	}
	_, _, _, err = api.SendMessageContext(ctx, "", slack.MsgOptionDeleteOriginal(click.ResponseURL))
	if !errors.As(err, &sc) || sc.Code != http.StatusNotFound {
		t.Errorf("sixth use: got %v, want HTTP 404", err)
	}
	fresh, err := s.BlockAction(ctx, slacktest.BlockAction{UserID: "U1", ChannelID: "C1", ActionID: "patch_cancel", MessageTS: msgs[0].TS}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := api.SendMessageContext(ctx, "", slack.MsgOptionDeleteOriginal(fresh.ResponseURL)); err != nil {
		t.Fatalf("delete_original: %v", err)
	}
	if got := s.Messages("C1"); len(got) != 0 {
		t.Errorf("after delete_original: %+v", got)
	}

	resp, err := http.PostForm(s.URL()+"/response/999", url.Values{})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown response URL: got %d, want 404", resp.StatusCode)
	}
}

func TestWaitForTimeoutNamesCondition(t *testing.T) {
	t.Parallel()
	s := slacktest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	err := s.WaitFor(ctx, "the moon", func(*slacktest.Server) bool { return false })
	if err == nil || !strings.Contains(err.Error(), "the moon") || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want a deadline error naming the condition", err)
	}
}
