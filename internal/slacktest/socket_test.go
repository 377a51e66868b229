package slacktest_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/slacktest"
)

// bot is the real slack-go Socket Mode client wired to a fake, with a tiny event
// loop that acks like a bot would.
type bot struct {
	api    *slack.Client
	client *socketmode.Client
	events chan socketmode.Event // every event the client emitted, in order
	runErr chan error            // RunContext's result
}

// handler reacts to one event; the default acks slash commands with a text payload
// and interactive envelopes without one.
type handler func(c *socketmode.Client, evt socketmode.Event)

func defaultHandler(c *socketmode.Client, evt socketmode.Event) {
	switch evt.Type {
	case socketmode.EventTypeSlashCommand:
		cmd := evt.Data.(slack.SlashCommand)
		_ = c.Ack(*evt.Request, map[string]any{"text": "got " + cmd.Text})
	case socketmode.EventTypeInteractive:
		_ = c.Ack(*evt.Request)
	}
}

// startBot runs a Socket Mode client against s until the test ends.
func startBot(t *testing.T, s *slacktest.Server, h handler, opts ...socketmode.Option) *bot {
	t.Helper()
	if h == nil {
		h = defaultHandler
	}
	api := slack.New(s.BotToken(), slack.OptionAppLevelToken(s.AppToken()), slack.OptionAPIURL(s.APIURL()))
	b := &bot{
		api:    api,
		client: socketmode.New(api, opts...),
		events: make(chan socketmode.Event, 100),
		runErr: make(chan error, 1),
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { b.runErr <- b.client.RunContext(ctx) })
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case evt := <-b.client.Events:
				h(b.client, evt)
				select {
				case b.events <- evt:
				default:
					t.Errorf("event buffer full, dropped %s", evt.Type)
				}
			}
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return b
}

// waitEvent returns the next event of type typ, skipping others.
func (b *bot) waitEvent(t *testing.T, typ socketmode.EventType) socketmode.Event {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case evt := <-b.events:
			if evt.Type == typ {
				return evt
			}
		case <-timeout:
			t.Fatalf("no %s event within 5s", typ)
		}
	}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestHelloConnects(t *testing.T) {
	t.Parallel()
	s := slacktest.New(t)
	b := startBot(t, s, nil)

	b.waitEvent(t, socketmode.EventTypeConnected)
	hello := b.waitEvent(t, socketmode.EventTypeHello)
	if got, want := hello.Request.ConnectionInfo.AppID, slacktest.AppID; got != want {
		t.Errorf("hello app_id: got %q, want %q", got, want)
	}
	if got, want := hello.Request.NumConnections, 1; got != want {
		t.Errorf("hello num_connections: got %d, want %d", got, want)
	}
	if got, want := s.Connections(), 1; got != want {
		t.Errorf("Connections: got %d, want %d", got, want)
	}
	if got := s.CallsTo("apps.connections.open"); len(got) != 1 || got[0].Error != "" {
		t.Errorf("apps.connections.open calls: got %+v, want one that succeeded", got)
	}
	if v := s.Violations(); len(v) != 0 {
		t.Errorf("violations: %q", v)
	}
}

func TestSlashCommandRoundTrip(t *testing.T) {
	t.Parallel()
	s := slacktest.New(t)
	b := startBot(t, s, nil)
	ctx := testContext(t)
	b.waitEvent(t, socketmode.EventTypeHello)

	ack, err := s.SlashCommand(ctx, slacktest.SlashCommand{
		UserID: "U123", ChannelID: "C123", Command: "/geminidb-patch", Text: "help",
	})
	if err != nil {
		t.Fatalf("SlashCommand: %v", err)
	}
	var payload struct{ Text string }
	if err := json.Unmarshal(ack.Payload, &payload); err != nil {
		t.Fatalf("ack payload %s: %v", ack.Payload, err)
	}
	if got, want := payload.Text, "got help"; got != want {
		t.Errorf("ack payload text: got %q, want %q", got, want)
	}
	if ack.Size <= len(ack.Payload) || ack.EnvelopeID == "" || ack.Latency <= 0 {
		t.Errorf("ack: got %+v, want size, envelope ID and latency", ack)
	}

	evt := b.waitEvent(t, socketmode.EventTypeSlashCommand)
	cmd := evt.Data.(slack.SlashCommand)
	want := slack.SlashCommand{
		Token: cmd.Token, TeamID: slacktest.TeamID, TeamDomain: slacktest.TeamDomain,
		ChannelID: "C123", ChannelName: "c123", UserID: "U123", UserName: "u123",
		Command: "/geminidb-patch", Text: "help", ResponseURL: ack.ResponseURL,
		TriggerID: cmd.TriggerID, APIAppID: slacktest.AppID,
	}
	if cmd != want {
		t.Errorf("client saw:\n got %+v\nwant %+v", cmd, want)
	}
	if !strings.HasPrefix(cmd.ResponseURL, s.URL()+"/response/") || cmd.TriggerID == "" {
		t.Errorf("response_url %q, trigger_id %q: want a minted URL and an ID", cmd.ResponseURL, cmd.TriggerID)
	}
	if evt.Request.EnvelopeID != ack.EnvelopeID || !evt.Request.AcceptsResponsePayload {
		t.Errorf("request: got %+v, want envelope %s accepting a response payload", evt.Request, ack.EnvelopeID)
	}
	if v := s.Violations(); len(v) != 0 {
		t.Errorf("violations: %q", v)
	}
}

func TestBlockActionRetryAttempt(t *testing.T) {
	t.Parallel()
	s := slacktest.New(t)
	b := startBot(t, s, nil)
	ctx := testContext(t)
	b.waitEvent(t, socketmode.EventTypeHello)

	_, ts, err := b.api.PostMessageContext(ctx, "C1", slack.MsgOptionText("plan", false))
	if err != nil {
		t.Fatal(err)
	}
	ack, err := s.BlockAction(ctx, slacktest.BlockAction{
		UserID: "U9", ChannelID: "C1", ActionID: "patch_confirm", BlockID: "confirm", Value: "r-1", MessageTS: ts,
	}, 2)
	if err != nil {
		t.Fatalf("BlockAction: %v", err)
	}
	if ack.Payload != nil {
		t.Errorf("ack payload: got %s, want none", ack.Payload)
	}

	evt := b.waitEvent(t, socketmode.EventTypeInteractive)
	if got, want := evt.Request.RetryAttempt, 2; got != want {
		t.Errorf("RetryAttempt: got %d, want %d", got, want)
	}
	if got, want := evt.Request.RetryReason, "timeout"; got != want {
		t.Errorf("RetryReason: got %q, want %q", got, want)
	}
	cb := evt.Data.(slack.InteractionCallback)
	if cb.Type != slack.InteractionTypeBlockActions || len(cb.ActionCallback.BlockActions) != 1 {
		t.Fatalf("callback: got type %q with %d block actions, want one block_actions", cb.Type, len(cb.ActionCallback.BlockActions))
	}
	act := cb.ActionCallback.BlockActions[0]
	if act.ActionID != "patch_confirm" || act.BlockID != "confirm" || act.Value != "r-1" || act.Type != "button" {
		t.Errorf("action: got %+v", act)
	}
	if cb.User.ID != "U9" || cb.Channel.ID != "C1" || cb.Team.ID != slacktest.TeamID || cb.ResponseURL != ack.ResponseURL {
		t.Errorf("callback: user %q channel %q team %q response_url %q", cb.User.ID, cb.Channel.ID, cb.Team.ID, cb.ResponseURL)
	}
	if cb.Container.Type != "message" || cb.Container.MessageTs != ts || cb.Container.ChannelID != "C1" || cb.Container.IsEphemeral {
		t.Errorf("container: got %+v", cb.Container)
	}
	if got, want := cb.Message.Text, "plan"; got != want {
		t.Errorf("message text: got %q, want %q", got, want)
	}
}

func TestDisconnectReconnectsWithoutAck(t *testing.T) {
	t.Parallel()
	s := slacktest.New(t)
	b := startBot(t, s, nil)
	ctx := testContext(t)
	b.waitEvent(t, socketmode.EventTypeHello)

	s.Disconnect("")
	if err := s.WaitConnections(ctx, 2); err != nil {
		t.Fatal(err)
	}
	b.waitEvent(t, socketmode.EventTypeHello)
	if _, err := s.SlashCommand(ctx, slacktest.SlashCommand{UserID: "U1", ChannelID: "C1", Command: "/x"}); err != nil {
		t.Fatalf("SlashCommand after reconnect: %v", err)
	}
	if err := s.WaitFor(ctx, "the old connection to close", func(s *slacktest.Server) bool {
		return s.OpenConnections() == 1
	}); err != nil {
		t.Fatal(err)
	}
	if v := s.Violations(); len(v) != 0 {
		t.Errorf("violations: %q", v)
	}
}

// A bot that acks hello is caught: that is what Violations is for.
func TestAckingHelloIsAViolation(t *testing.T) {
	t.Parallel()
	s := slacktest.New(t)
	startBot(t, s, func(c *socketmode.Client, evt socketmode.Event) {
		if evt.Type == socketmode.EventTypeHello {
			_ = c.Ack(*evt.Request)
		}
	})
	ctx := testContext(t)
	if err := s.WaitFor(ctx, "a violation", func(s *slacktest.Server) bool { return len(s.Violations()) > 0 }); err != nil {
		t.Fatal(err)
	}
	if v := s.Violations(); !strings.Contains(v[0], "empty envelope_id") {
		t.Errorf("violation: got %q, want one about an empty envelope_id", v)
	}
}

func TestDropConnectionsReconnects(t *testing.T) {
	t.Parallel()
	s := slacktest.New(t)
	b := startBot(t, s, nil)
	ctx := testContext(t)
	b.waitEvent(t, socketmode.EventTypeHello)

	s.DropConnections()
	if err := s.WaitConnections(ctx, 2); err != nil {
		t.Fatal(err)
	}
	b.waitEvent(t, socketmode.EventTypeHello)
	if _, err := s.SlashCommand(ctx, slacktest.SlashCommand{UserID: "U1", ChannelID: "C1", Command: "/x"}); err != nil {
		t.Fatalf("SlashCommand after reconnect: %v", err)
	}
}

func TestPingTimeoutReconnects(t *testing.T) {
	t.Parallel()
	const clientTimeout = 150 * time.Millisecond
	s := slacktest.New(t, slacktest.WithPingInterval(20*time.Millisecond))
	b := startBot(t, s, nil, socketmode.OptionPingInterval(clientTimeout))
	ctx := testContext(t)
	b.waitEvent(t, socketmode.EventTypeHello)

	// Pings for three of the client's timeouts: it has checked for them
	// more than once and, since they kept coming, not hung up.
	before := s.Pings()
	if err := s.WaitFor(ctx, "pings for three client timeouts", func(s *slacktest.Server) bool {
		return s.Pings() >= before+int(3*clientTimeout/(20*time.Millisecond))
	}); err != nil {
		t.Fatal(err)
	}
	if got := s.Connections(); got != 1 {
		t.Fatalf("Connections while pinging: got %d, want 1", got)
	}
	s.PausePings(true)
	if err := s.WaitConnections(ctx, 2); err != nil {
		t.Fatal(err)
	}
}

func TestRevokedAppTokenStopsClient(t *testing.T) {
	t.Parallel()
	s := slacktest.New(t)
	b := startBot(t, s, nil)
	b.waitEvent(t, socketmode.EventTypeHello)

	s.RevokeAppToken()
	s.Disconnect("")
	select {
	case err := <-b.runErr:
		if err == nil || !strings.Contains(err.Error(), "invalid_auth") {
			t.Errorf("RunContext: got %v, want invalid_auth", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("RunContext did not return after the app token was revoked")
	}
}

func TestEnvelopeWithoutConnection(t *testing.T) {
	t.Parallel()
	s := slacktest.New(t)
	_, err := s.SlashCommand(testContext(t), slacktest.SlashCommand{UserID: "U1", ChannelID: "C1", Command: "/x"})
	if !errors.Is(err, slacktest.ErrNoConnection) {
		t.Errorf("got %v, want ErrNoConnection", err)
	}
}

func TestUnackedAndStrayAcks(t *testing.T) {
	t.Parallel()
	s := slacktest.New(t)
	b := startBot(t, s, func(*socketmode.Client, socketmode.Event) {}) // never acks
	ctx := testContext(t)
	b.waitEvent(t, socketmode.EventTypeHello)

	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_, err := s.SlashCommand(short, slacktest.SlashCommand{UserID: "U1", ChannelID: "C1", Command: "/x"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("SlashCommand without ack: got %v, want DeadlineExceeded", err)
	}
	evt := b.waitEvent(t, socketmode.EventTypeSlashCommand)

	_ = b.client.Ack(*evt.Request)                                  // late
	_ = b.client.Ack(socketmode.Request{EnvelopeID: "not-a-thing"}) // unknown
	if err := s.WaitFor(ctx, "two violations", func(s *slacktest.Server) bool { return len(s.Violations()) == 2 }); err != nil {
		t.Fatalf("%v; violations %q", err, s.Violations())
	}
	v := s.Violations()
	if !strings.Contains(v[0], "late ack") || !strings.Contains(v[1], "unknown envelope_id") {
		t.Errorf("violations: got %q, want a late ack then an unknown envelope", v)
	}
}

// TestWire speaks raw WebSocket to check the frames themselves: hello, the
// envelope, pings, and the 20KB ack limit the slack-go client enforces on its own.
func TestWire(t *testing.T) {
	t.Parallel()
	s := slacktest.New(t, slacktest.WithPingInterval(10*time.Millisecond))
	ctx := testContext(t)

	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.APIURL()+"apps.connections.open", nil)
	req.Header.Set("Authorization", "Bearer "+s.AppToken())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var open struct {
		OK  bool
		URL string
	}
	err = json.NewDecoder(resp.Body).Decode(&open)
	resp.Body.Close()
	if err != nil || !open.OK || !strings.HasPrefix(open.URL, "ws://127.0.0.1:") || !strings.Contains(open.URL, "/link/?ticket=") {
		t.Fatalf("apps.connections.open: got %+v, %v", open, err)
	}

	ws, _, err := websocket.DefaultDialer.DialContext(ctx, open.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if _, _, err := websocket.DefaultDialer.DialContext(ctx, open.URL, nil); err == nil {
		t.Error("second dial with the same ticket: got success, want refusal")
	}
	pings := make(chan struct{}, 100)
	ws.SetPingHandler(func(string) error {
		select {
		case pings <- struct{}{}:
		default:
		}
		return nil
	})

	var hello map[string]any
	if err := ws.ReadJSON(&hello); err != nil {
		t.Fatal(err)
	}
	wantHello := `{"connection_info":{"app_id":"A0FAKE"},"debug_info":{"approximate_connection_time":18060,"build_number":1,"host":"fake"},"num_connections":1,"type":"hello"}`
	if got, _ := json.Marshal(hello); string(got) != wantHello {
		t.Errorf("hello:\n got %s\nwant %s", got, wantHello)
	}

	type result struct {
		ack slacktest.Ack
		err error
	}
	done := make(chan result, 1)
	go func() {
		ack, err := s.SlashCommand(ctx, slacktest.SlashCommand{UserID: "U1", ChannelID: "C1", Command: "/x", Text: "a b"})
		done <- result{ack, err}
	}()
	var env struct {
		EnvelopeID             string                     `json:"envelope_id"`
		Type                   string                     `json:"type"`
		AcceptsResponsePayload bool                       `json:"accepts_response_payload"`
		RetryAttempt           *int                       `json:"retry_attempt"`
		RetryReason            *string                    `json:"retry_reason"`
		Payload                map[string]json.RawMessage `json:"payload"`
	}
	if err := ws.ReadJSON(&env); err != nil {
		t.Fatal(err)
	}
	if env.Type != "slash_commands" || !env.AcceptsResponsePayload || env.RetryAttempt == nil || *env.RetryAttempt != 0 || env.RetryReason == nil {
		t.Errorf("envelope: got %+v", env)
	}
	for _, k := range []string{"token", "team_id", "team_domain", "channel_id", "channel_name", "user_id", "user_name",
		"command", "text", "api_app_id", "is_enterprise_install", "response_url", "trigger_id"} {
		if _, ok := env.Payload[k]; !ok {
			t.Errorf("payload lacks %q", k)
		}
	}

	big := map[string]any{"envelope_id": env.EnvelopeID, "payload": map[string]string{"text": strings.Repeat("x", 21000)}}
	if err := ws.WriteJSON(big); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err == nil || !strings.Contains(r.err.Error(), "20480") {
		t.Errorf("oversized ack: got %v, want an error naming the limit", r.err)
	}
	if v := s.Violations(); len(v) != 1 || !strings.Contains(v[0], "drops acks") {
		t.Errorf("violations: got %q, want one about the ack size", v)
	}

	// Pings are handled while reading; read until two have arrived.
	go func() {
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				return
			}
		}
	}()
	for range 2 {
		select {
		case <-pings:
		case <-ctx.Done():
			t.Fatal("no WebSocket pings")
		}
	}
}

// The fake answers invalid_auth for the wrong app token, which the client treats as fatal.
func TestWrongAppToken(t *testing.T) {
	t.Parallel()
	s := slacktest.New(t, slacktest.WithAppToken("xapp-other"))
	api := slack.New(s.BotToken(), slack.OptionAppLevelToken("xapp-wrong"), slack.OptionAPIURL(s.APIURL()))
	client := socketmode.New(api)
	ctx := testContext(t)
	go func() {
		for {
			select {
			case <-client.Events:
			case <-ctx.Done():
				return
			}
		}
	}()
	err := client.RunContext(ctx)
	if err == nil || err.Error() != "invalid_auth" {
		t.Errorf("RunContext: got %v, want invalid_auth", err)
	}
}

// With WithRoundRobin, envelopes alternate over the open connections, as
// Slack spreads them over an app's replicas.
func TestRoundRobinSpreadsEnvelopes(t *testing.T) {
	s := slacktest.New(t, slacktest.WithRoundRobin())
	handler := func(name string) handler {
		return func(c *socketmode.Client, evt socketmode.Event) {
			if evt.Type == socketmode.EventTypeSlashCommand {
				_ = c.Ack(*evt.Request, map[string]any{"text": name})
			}
		}
	}
	startBot(t, s, handler("a"))
	if err := s.WaitConnections(testContext(t), 1); err != nil {
		t.Fatal(err)
	}
	startBot(t, s, handler("b"))
	if err := s.WaitConnections(testContext(t), 2); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for range 4 {
		ack, err := s.SlashCommand(testContext(t), slacktest.SlashCommand{UserID: "U1", ChannelID: "C1", Command: "/x", Text: "t"})
		if err != nil {
			t.Fatal(err)
		}
		var p struct{ Text string }
		_ = json.Unmarshal(ack.Payload, &p)
		got[p.Text]++
	}
	if got["a"] != 2 || got["b"] != 2 {
		t.Errorf("acks by connection = %v, want 2 each", got)
	}
}
