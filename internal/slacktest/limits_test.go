package slacktest_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slack-go/slack"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/slacktest"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func sections(n, each int) []slack.Block {
	var out []slack.Block
	for range n {
		out = append(out, section(strings.Repeat("x", each)))
	}
	return out
}

func TestBlockTextLimit(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	strict := slacktest.New(t, slacktest.WithLimits(slacktest.Limits{BlockText: slacktest.Strict().BlockText}))
	lenient := slacktest.New(t)

	tests := []struct {
		name   string
		blocks []slack.Block
		strict string // error under Strict
	}{
		{"4 × 3000 = 12000", sections(4, 3000), ""},
		{"5 × 2401 = 12005", sections(5, 2401), "msg_blocks_too_long"},
		{"41 × 2900 (a 100-instance reply)", sections(41, 2900), "msg_blocks_too_long"},
		{"one section of 3001", sections(1, 3001), "invalid_blocks"},
		{"51 blocks", sections(51, 1), "invalid_blocks"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newAPI(strict, strict.BotToken())
			_, ts, err := api.PostMessageContext(ctx, "C1", slack.MsgOptionBlocks(tt.blocks...))
			if got := slackError(err); got != tt.strict {
				t.Errorf("strict chat.postMessage: got %v, want %q", err, tt.strict)
			}
			_, ts2, _ := api.PostMessageContext(ctx, "C1", slack.MsgOptionText("short", false))
			_, _, _, err = api.UpdateMessageContext(ctx, "C1", ts2, slack.MsgOptionBlocks(tt.blocks...))
			if got := slackError(err); got != tt.strict {
				t.Errorf("strict chat.update: got %v, want %q", err, tt.strict)
			}
			_, err = api.PostEphemeralContext(ctx, "C1", "U1", slack.MsgOptionBlocks(tt.blocks...))
			if got := slackError(err); got != tt.strict {
				t.Errorf("strict chat.postEphemeral: got %v, want %q", err, tt.strict)
			}
			_ = ts
			if tt.strict == "msg_blocks_too_long" {
				body, _ := json.Marshal(map[string]any{"blocks": tt.blocks})
				resp, err := http.Post(strict.ResponseURL(), "application/json", bytes.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusBadRequest {
					t.Errorf("strict response_url: got %s, want 400", resp.Status)
				}
				// Off by default.
				lapi := newAPI(lenient, lenient.BotToken())
				if _, _, err := lapi.PostMessageContext(ctx, "C1", slack.MsgOptionBlocks(tt.blocks...)); err != nil {
					t.Errorf("default limits: got %v, want ok", err)
				}
			}
		})
	}
	if got := slacktest.BlocksTextLen(mustJSON(t, sections(3, 10))); got != 30 {
		t.Errorf("BlocksTextLen: got %d, want 30", got)
	}
}

func mustJSON(t *testing.T, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rateLimited tells whether err is a 429 and its Retry-After.
func rateLimited(err error) (time.Duration, bool) {
	var rl *slack.RateLimitedError
	if errors.As(err, &rl) {
		return rl.RetryAfter, true
	}
	return 0, false
}

func TestPostMessagePerChannelRate(t *testing.T) {
	t.Parallel()
	clock := newClock()
	s := slacktest.New(t, slacktest.WithClock(clock.Now),
		slacktest.WithLimits(slacktest.Limits{PostMessage: slacktest.Rate{PerMinute: 60, Burst: 3}}))
	ctx := testContext(t)
	api := newAPI(s, s.BotToken())
	post := func(channel string) error {
		_, _, err := api.PostMessageContext(ctx, channel, slack.MsgOptionText("x", false))
		return err
	}
	for i := range 3 {
		if err := post("C1"); err != nil {
			t.Fatalf("burst post %d: %v", i, err)
		}
	}
	wait, limited := rateLimited(post("C1"))
	if !limited || wait != time.Second {
		t.Errorf("4th post in C1: got limited=%v Retry-After %v, want 1s", limited, wait)
	}
	if err := post("C2"); err != nil {
		t.Errorf("another channel has its own budget: %v", err)
	}
	clock.Advance(time.Second)
	if err := post("C1"); err != nil {
		t.Errorf("post after Retry-After: %v", err)
	}
	if _, limited := rateLimited(post("C1")); !limited {
		t.Error("second post in the same second: got ok, want 429")
	}
	if got, want := len(s.Messages("C1")), 4; got != want {
		t.Errorf("messages in C1: got %d, want %d (refused posts are not kept)", got, want)
	}
	calls := s.CallsTo("chat.postMessage")
	if last := calls[len(calls)-1]; last.Status != http.StatusTooManyRequests || last.Error != "ratelimited" {
		t.Errorf("recorded call: got %d %q, want 429 ratelimited", last.Status, last.Error)
	}
}

func TestMethodTiers(t *testing.T) {
	t.Parallel()
	clock := newClock()
	s := slacktest.New(t, slacktest.WithClock(clock.Now), slacktest.WithLimits(slacktest.Strict()))
	s.AddChannel(slacktest.Channel{ID: "C1", Members: []string{slacktest.BotUserID, "U1"}})
	ctx := testContext(t)
	api := newAPI(s, s.BotToken())
	_, ts, err := api.PostMessageContext(ctx, "C1", slack.MsgOptionText("x", false))
	if err != nil {
		t.Fatal(err)
	}
	strict := slacktest.Strict()

	update := func() error {
		_, _, _, err := api.UpdateMessageContext(ctx, "C1", ts, slack.MsgOptionText("y", false))
		return err
	}
	for i := range strict.Update.Burst {
		if err := update(); err != nil {
			t.Fatalf("update %d: %v", i, err)
		}
	}
	// 50 a minute: the next token comes 1.2 s later, sent as 2 s.
	if wait, limited := rateLimited(update()); !limited || wait != 2*time.Second {
		t.Errorf("chat.update over Tier 3: got limited=%v Retry-After %v, want 2s", limited, wait)
	}

	publish := func() error {
		_, err := api.PublishViewContext(ctx, slack.PublishViewContextRequest{UserID: "U1", View: homeView(1, "row")})
		return err
	}
	for i := range strict.Publish.Burst {
		if err := publish(); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	if wait, limited := rateLimited(publish()); !limited || wait != time.Second {
		t.Errorf("views.publish over Tier 4: got limited=%v Retry-After %v, want 1s", limited, wait)
	}
	clock.Advance(2 * time.Second)
	if err := update(); err != nil {
		t.Errorf("update after Retry-After: %v", err)
	}
	if err := publish(); err != nil {
		t.Errorf("publish after Retry-After: %v", err)
	}

	// The header itself, as Slack sends it.
	for range 10 {
		_ = publish()
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.APIURL()+"views.publish", strings.NewReader(`{"user_id":"U1","view":{"type":"home","blocks":[]}}`))
	req.Header.Set("Authorization", "Bearer "+s.BotToken())
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" {
		t.Errorf("raw views.publish: got %s Retry-After %q, want 429 and 1", resp.Status, resp.Header.Get("Retry-After"))
	}
}

func TestMembership(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	bot := slacktest.BotUserID
	channels := []slacktest.Channel{
		{ID: "COUT", Members: []string{"U1"}},
		{ID: "GHIDDEN", Private: true, Members: []string{"U1"}},
		{ID: "GOPS", Private: true, Members: []string{bot, "U1"}},
	}
	tests := []struct {
		name, channel, user string
		limits              slacktest.Limits
		post, ephemeral     string // errors
	}{
		{"public without the bot", "COUT", "U1", slacktest.DefaultLimits(), "not_in_channel", "not_in_channel"},
		{"private without the bot", "GHIDDEN", "U1", slacktest.DefaultLimits(), "channel_not_found", "channel_not_found"},
		{"private with the bot", "GOPS", "U1", slacktest.DefaultLimits(), "", ""},
		{"ephemeral to a non-member", "GOPS", "U2", slacktest.DefaultLimits(), "", "user_not_in_channel"},
		{"unknown channel, default", "C999", "U1", slacktest.DefaultLimits(), "", ""},
		{"unknown channel, strict", "C999", "U1", slacktest.Strict(), "channel_not_found", "channel_not_found"},
		{"the app's DM, strict", "U1", "U1", slacktest.Strict(), "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := []slacktest.Option{slacktest.WithLimits(tt.limits)}
			for _, c := range channels {
				opts = append(opts, slacktest.WithChannel(c))
			}
			s := slacktest.New(t, opts...)
			api := newAPI(s, s.BotToken())
			_, _, err := api.PostMessageContext(ctx, tt.channel, slack.MsgOptionText("x", false))
			if got := slackError(err); got != tt.post {
				t.Errorf("chat.postMessage: got %v, want %q", err, tt.post)
			}
			_, err = api.PostEphemeralContext(ctx, tt.channel, tt.user, slack.MsgOptionText("x", false))
			if got := slackError(err); got != tt.ephemeral {
				t.Errorf("chat.postEphemeral: got %v, want %q", err, tt.ephemeral)
			}
		})
	}

	// Joining fixes it; leaving breaks it again.
	s := slacktest.New(t, slacktest.WithChannel(channels[0]))
	api := newAPI(s, s.BotToken())
	s.Join("COUT", bot)
	if _, _, err := api.PostMessageContext(ctx, "COUT", slack.MsgOptionText("x", false)); err != nil {
		t.Errorf("after Join: %v", err)
	}
	s.Leave("COUT", bot)
	if _, _, err := api.PostMessageContext(ctx, "COUT", slack.MsgOptionText("x", false)); slackError(err) != "not_in_channel" {
		t.Errorf("after Leave: got %v, want not_in_channel", err)
	}
	if s.Join("CNONE", bot) {
		t.Error("Join of an unknown channel: got true")
	}
}

func TestUsersConversations(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	bot := slacktest.BotUserID
	s := slacktest.New(t, slacktest.WithScopes(append(slices.Clone(slacktest.DefaultScopes), "channels:read", "groups:read")...))
	for _, c := range []slacktest.Channel{
		{ID: "C1", Name: "ops", Members: []string{bot, "UA"}},
		{ID: "C2", Members: []string{"UA"}},
		{ID: "C3", Members: []string{"UB"}},
		{ID: "C4", Everyone: true},
		{ID: "G1", Private: true, Members: []string{bot, "UA"}},
		{ID: "G2", Private: true, Members: []string{"UA"}}, // the bot cannot see it
	} {
		s.AddChannel(c)
	}
	api := newAPI(s, s.BotToken())
	list := func(p *slack.GetConversationsForUserParameters) ([]string, error) {
		var ids []string
		for {
			chans, next, err := api.GetConversationsForUserContext(ctx, p)
			if err != nil {
				return ids, err
			}
			for _, c := range chans {
				ids = append(ids, c.ID)
			}
			if next == "" {
				return ids, nil
			}
			p.Cursor = next
		}
	}
	tests := []struct {
		name string
		p    slack.GetConversationsForUserParameters
		want string
	}{
		{"default types are public", slack.GetConversationsForUserParameters{UserID: "UA"}, "C1,C2,C4"},
		{"public and private, paged by 1", slack.GetConversationsForUserParameters{UserID: "UA", Types: []string{"public_channel", "private_channel"}, Limit: 1}, "C1,C2,C4,G1"},
		{"private only", slack.GetConversationsForUserParameters{UserID: "UA", Types: []string{"private_channel"}}, "G1"},
		{"another user", slack.GetConversationsForUserParameters{UserID: "UB", Types: []string{"public_channel", "private_channel"}}, "C3,C4"},
		{"the bot itself", slack.GetConversationsForUserParameters{Types: []string{"public_channel", "private_channel"}}, "C1,G1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ids, err := list(&tt.p)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(ids, ","); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
	if got := len(s.CallsTo("users.conversations")); got < 5+3 {
		t.Errorf("paging: got %d calls, want at least 8", got)
	}
	_, _, err := api.GetConversationsForUserContext(ctx, &slack.GetConversationsForUserParameters{UserID: "UA", Cursor: "bogus"})
	if got := slackError(err); got != "invalid_cursor" {
		t.Errorf("bad cursor: got %v, want invalid_cursor", err)
	}

	// The manifest's scopes (DefaultScopes) do not include the read scopes.
	plain := slacktest.New(t)
	_, _, err = newAPI(plain, plain.BotToken()).GetConversationsForUserContext(ctx, &slack.GetConversationsForUserParameters{UserID: "UA"})
	if got := slackError(err); got != "missing_scope" && !slices.Contains(slacktest.DefaultScopes, "channels:read") {
		t.Errorf("default scopes: got %v, want missing_scope", err)
	}

	narrow := slacktest.New(t, slacktest.WithScopes("commands", "chat:write", "channels:read"))
	napi := newAPI(narrow, narrow.BotToken())
	if _, _, err := napi.GetConversationsForUserContext(ctx, &slack.GetConversationsForUserParameters{UserID: "UA"}); err != nil {
		t.Errorf("public with channels:read: %v", err)
	}
	_, _, err = napi.GetConversationsForUserContext(ctx, &slack.GetConversationsForUserParameters{UserID: "UA", Types: []string{"private_channel"}})
	if got := slackError(err); got != "missing_scope" {
		t.Errorf("private without groups:read: got %v, want missing_scope", err)
	}
}

func TestScopesHeader(t *testing.T) {
	t.Parallel()
	s := slacktest.New(t, slacktest.WithScopes("commands", "chat:write"))
	req, _ := http.NewRequestWithContext(testContext(t), http.MethodPost, s.APIURL()+"auth.test", nil)
	req.Header.Set("Authorization", "Bearer "+s.BotToken())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("X-OAuth-Scopes"); got != "commands,chat:write" {
		t.Errorf("x-oauth-scopes: got %q, want commands,chat:write", got)
	}
}

func TestResponseURLExpires(t *testing.T) {
	t.Parallel()
	clock := newClock()
	s := slacktest.New(t, slacktest.WithClock(clock.Now))
	post := func(u string) int {
		resp, err := http.Post(u, "application/json", strings.NewReader(`{"text":"hi"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	u := s.ResponseURL()
	if got := post(u); got != http.StatusOK {
		t.Fatalf("fresh URL: got %d, want 200", got)
	}
	clock.Advance(slacktest.ResponseURLTTL - time.Second)
	if got := post(u); got != http.StatusOK {
		t.Errorf("after 29:59: got %d, want 200", got)
	}
	clock.Advance(2 * time.Second)
	if got := post(u); got != http.StatusNotFound {
		t.Errorf("after 30:01: got %d, want 404", got)
	}
	if c := s.CallsTo("response_url"); c[len(c)-1].Error != "expired_url" {
		t.Errorf("recorded error: got %q, want expired_url", c[len(c)-1].Error)
	}

	fresh := s.ResponseURL()
	for i := range slacktest.ResponseURLUses {
		if got := post(fresh); got != http.StatusOK {
			t.Fatalf("use %d: got %d", i+1, got)
		}
	}
	if got := post(fresh); got != http.StatusNotFound {
		t.Errorf("6th use: got %d, want 404", got)
	}
}
