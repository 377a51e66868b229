package slacktest_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/slack-go/slack"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/slacktest"
)

// rawConn opens a Socket Mode connection by hand and returns it.
func rawConn(t *testing.T, s *slacktest.Server) *websocket.Conn {
	t.Helper()
	ctx := testContext(t)
	_, url, err := slack.New(s.BotToken(), slack.OptionAppLevelToken(s.AppToken()), slack.OptionAPIURL(s.APIURL())).StartSocketModeContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ws, _, err := websocket.DefaultDialer.DialContext(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

// frame is a Socket Mode message from the fake.
type frame struct {
	Type         string          `json:"type"`
	Reason       string          `json:"reason"`
	EnvelopeID   string          `json:"envelope_id"`
	RetryAttempt int             `json:"retry_attempt"`
	RetryReason  string          `json:"retry_reason"`
	Payload      json.RawMessage `json:"payload"`
}

func readFrame(t *testing.T, ws *websocket.Conn) frame {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	var f frame
	if err := ws.ReadJSON(&f); err != nil {
		t.Fatalf("read frame: %v", err)
	}
	return f
}

func TestTooManyWebsockets(t *testing.T) {
	t.Parallel()
	s := slacktest.New(t, slacktest.WithLimits(slacktest.Limits{MaxConnections: 2}))
	for i := range 2 {
		if f := readFrame(t, rawConn(t, s)); f.Type != "hello" {
			t.Fatalf("connection %d: got %+v, want hello", i+1, f)
		}
	}
	third := rawConn(t, s)
	if f := readFrame(t, third); f.Type != "disconnect" || f.Reason != slacktest.DisconnectTooManyWebsockets {
		t.Errorf("third connection: got %+v, want disconnect too_many_websockets", f)
	}
	if got := s.OpenConnections(); got != 2 {
		t.Errorf("open connections: got %d, want 2 (the refused one takes no envelopes)", got)
	}
	if got := s.Refusals(); got != 1 {
		t.Errorf("refusals: got %d, want 1", got)
	}
}

func TestLinkDisabled(t *testing.T) {
	t.Parallel()
	s := slacktest.New(t)
	ws := rawConn(t, s)
	if f := readFrame(t, ws); f.Type != "hello" {
		t.Fatalf("got %+v, want hello", f)
	}
	s.DisableLink()
	if f := readFrame(t, ws); f.Type != "disconnect" || f.Reason != slacktest.DisconnectLinkDisabled {
		t.Errorf("open connection: got %+v, want disconnect link_disabled", f)
	}
	// Reconnecting does not help while the link is off.
	if f := readFrame(t, rawConn(t, s)); f.Type != "disconnect" || f.Reason != slacktest.DisconnectLinkDisabled {
		t.Errorf("new connection: got %+v, want disconnect link_disabled", f)
	}
	if _, err := s.SlashCommand(testContext(t), slacktest.SlashCommand{UserID: "U1", ChannelID: "C1", Command: "/x"}); !errors.Is(err, slacktest.ErrNoConnection) {
		t.Errorf("envelope while disabled: got %v, want ErrNoConnection", err)
	}
	s.EnableLink()
	if f := readFrame(t, rawConn(t, s)); f.Type != "hello" {
		t.Errorf("after EnableLink: got %+v, want hello", f)
	}
}

func TestWarningThenRefresh(t *testing.T) {
	t.Parallel()
	s := slacktest.New(t, slacktest.WithWarningLead(300*time.Millisecond))
	ws := rawConn(t, s)
	readFrame(t, ws) // hello
	s.Disconnect(slacktest.DisconnectWarning)
	if f := readFrame(t, ws); f.Type != "disconnect" || f.Reason != "warning" {
		t.Fatalf("got %+v, want disconnect warning", f)
	}
	// A warned connection still takes envelopes…
	acked := make(chan error, 1)
	go func() {
		_, err := s.SlashCommand(testContext(t), slacktest.SlashCommand{UserID: "U1", ChannelID: "C1", Command: "/x"})
		acked <- err
	}()
	env := readFrame(t, ws)
	if env.Type != "slash_commands" {
		t.Fatalf("after the warning: got %+v, want a slash_commands envelope", env)
	}
	if err := ws.WriteJSON(map[string]any{"envelope_id": env.EnvelopeID}); err != nil {
		t.Fatal(err)
	}
	if err := <-acked; err != nil {
		t.Errorf("envelope after the warning: %v", err)
	}
	// …until the refresh comes.
	if f := readFrame(t, ws); f.Type != "disconnect" || f.Reason != slacktest.DisconnectRefresh {
		t.Errorf("after the lead: got %+v, want disconnect refresh_requested", f)
	}
	if _, err := s.SlashCommand(testContext(t), slacktest.SlashCommand{UserID: "U1", ChannelID: "C1", Command: "/x"}); !errors.Is(err, slacktest.ErrNoConnection) {
		t.Errorf("envelope after the refresh: got %v, want ErrNoConnection", err)
	}
}

func TestIrregularPings(t *testing.T) {
	t.Parallel()
	const every = 20 * time.Millisecond
	intervals := func(jitter float64) (lo, hi time.Duration) {
		s := slacktest.New(t, slacktest.WithPingInterval(every), slacktest.WithLimits(slacktest.Limits{PingJitter: jitter}))
		ws := rawConn(t, s)
		pings := make(chan time.Time, 100)
		ws.SetPingHandler(func(string) error { pings <- time.Now(); return nil })
		go func() {
			for {
				if _, _, err := ws.ReadMessage(); err != nil {
					return
				}
			}
		}()
		last := <-pings
		lo, hi = time.Hour, 0
		for range 20 {
			at := <-pings
			d := at.Sub(last)
			lo, hi, last = min(lo, d), max(hi, d), at
		}
		return lo, hi
	}
	lo, hi := intervals(0.5)
	if lo > every*9/10 && hi < every*11/10 {
		t.Errorf("pings with jitter 0.5: intervals %v…%v, want some under %v or over %v", lo, hi, every*9/10, every*11/10)
	}
	if lo < every*4/10 {
		t.Errorf("pings with jitter 0.5: shortest interval %v, want at least half of %v", lo, every)
	}
}

func TestEventRedelivery(t *testing.T) {
	t.Parallel()
	s := slacktest.New(t, slacktest.WithAckTimeout(200*time.Millisecond),
		slacktest.WithLimits(slacktest.Limits{EventRetries: []time.Duration{0, 50 * time.Millisecond}}))
	ws := rawConn(t, s)
	readFrame(t, ws) // hello

	type result struct {
		ack slacktest.Ack
		err error
	}
	done := make(chan result, 1)
	go func() {
		ack, err := s.AppHomeOpened(context.Background(), "U1", "home")
		done <- result{ack, err}
	}()
	var eventIDs, envelopeIDs []string
	for attempt := range 3 {
		env := readFrame(t, ws)
		var p struct {
			EventID string `json:"event_id"`
		}
		_ = json.Unmarshal(env.Payload, &p)
		eventIDs, envelopeIDs = append(eventIDs, p.EventID), append(envelopeIDs, env.EnvelopeID)
		wantReason := ""
		if attempt > 0 {
			wantReason = "timeout"
		}
		if env.Type != "events_api" || env.RetryAttempt != attempt || env.RetryReason != wantReason {
			t.Errorf("delivery %d: got type %s retry_attempt %d retry_reason %q, want events_api %d %q",
				attempt, env.Type, env.RetryAttempt, env.RetryReason, attempt, wantReason)
		}
		if attempt == 2 { // ack only the last one
			if err := ws.WriteJSON(map[string]any{"envelope_id": env.EnvelopeID}); err != nil {
				t.Fatal(err)
			}
		}
	}
	r := <-done
	if r.err != nil || r.ack.RetryAttempt != 2 {
		t.Errorf("AppHomeOpened: got %+v, %v, want the ack of retry 2", r.ack, r.err)
	}
	if eventIDs[0] == "" || eventIDs[0] != eventIDs[1] || eventIDs[1] != eventIDs[2] {
		t.Errorf("event_id: got %q, want the same on every delivery", eventIDs)
	}
	if envelopeIDs[0] == envelopeIDs[1] || envelopeIDs[1] == envelopeIDs[2] {
		t.Errorf("envelope_id: got %q, want a new one per delivery", envelopeIDs)
	}

	// Retries run out: the error is the last timeout.
	go func() {
		_, err := s.AppHomeOpened(context.Background(), "U1", "home")
		done <- result{err: err}
	}()
	for range 3 {
		readFrame(t, ws)
	}
	if r := <-done; !errors.Is(r.err, context.DeadlineExceeded) {
		t.Errorf("never acked: got %v, want a deadline error", r.err)
	}
}
