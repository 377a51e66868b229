package bot

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"
	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/commands"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/slacktest"
)

// Dials of connections that die at once are paced: exponential backoff,
// and never more than maxDials in any minute; after a healthy connection
// the redial is immediate.
func TestDialGate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newDialGate(time.Now)
		start := time.Now()
		var at []time.Duration
		for range 30 {
			g.wait(context.Background())
			at = append(at, time.Since(start))
		}
		want := []time.Duration{0, 1, 3, 7, 15, 31, 61, 91, 121}
		for i, w := range want {
			if at[i] != w*time.Second {
				t.Errorf("dial %d at %v, want %v", i+1, at[i], w*time.Second)
			}
		}
		for i := range at {
			n := 0
			for _, d := range at[i:] {
				if d-at[i] < dialWindow {
					n++
				}
			}
			if n > maxDials {
				t.Errorf("%d dials within a minute of dial %d, want at most %d", n, i+1, maxDials)
			}
		}
		time.Sleep(2 * healthyFor) // a connection that lasted
		before := time.Now()
		if g.wait(context.Background()); time.Since(before) != 0 {
			t.Errorf("redial after a healthy connection waited %v, want 0", time.Since(before))
		}
		before = time.Now()
		if g.wait(context.Background()); time.Since(before) != time.Second {
			t.Errorf("redial after a short one waited %v, want 1s", time.Since(before))
		}

		// A pending dial ends with the supervisor's context.
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { g.wait(ctx); close(done) }()
		synctest.Wait()
		cancel()
		<-done
	})
}

// syncLog is a zerolog sink tests can read while the bot writes.
type syncLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// superviseAgainst runs the supervisor of a minimal Bot against the fake
// Slack s, acking every envelope, until the test ends. The channel gets
// superviseSocket's result.
func superviseAgainst(t *testing.T, s *slacktest.Server, logs *syncLog) <-chan error {
	t.Helper()
	api := slack.New(s.BotToken(), slack.OptionAppLevelToken(s.AppToken()), slack.OptionAPIURL(s.APIURL()))
	b := &Bot{sm: socketmode.New(api), log: zerolog.New(logs), metrics: NewMetrics(nil)}
	ctx, cancel := context.WithCancel(context.Background())
	result := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Go(func() { result <- b.superviseSocket(ctx) })
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case evt := <-b.sm.Events:
				if evt.Request != nil && evt.Request.EnvelopeID != "" {
					_ = b.sm.Ack(*evt.Request)
				}
			}
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return result
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Slack refusing every connection with too_many_websockets gets paced
// redials, not a storm, and the bot connects once a slot is free.
func TestSupervisorPacesTooManyWebsockets(t *testing.T) {
	t.Parallel()
	s := slacktest.New(t, slacktest.WithLimits(slacktest.Limits{MaxConnections: 1}))
	// Someone else holds the app's only connection.
	_, url, err := slack.New(s.BotToken(), slack.OptionAppLevelToken(s.AppToken()), slack.OptionAPIURL(s.APIURL())).StartSocketModeContext(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	squatter, _, err := websocket.DefaultDialer.DialContext(testCtx(t), url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WaitFor(testCtx(t), "the squatter's connection", func(s *slacktest.Server) bool { return s.OpenConnections() == 1 }); err != nil {
		t.Fatal(err)
	}

	logs := &syncLog{}
	start := time.Now()
	superviseAgainst(t, s, logs)
	if err := s.WaitFor(testCtx(t), "3 refused connections", func(s *slacktest.Server) bool { return s.Refusals() >= 3 }); err != nil {
		t.Fatal(err)
	}
	// Dials at 0, 1 s and 3 s; without pacing slack-go redials at once.
	if took := time.Since(start); took < 2500*time.Millisecond {
		t.Errorf("3 refused dials took %v, want at least 2.5s (backoff 1s, 2s)", took)
	}
	if got := s.Refusals(); got > 4 {
		t.Errorf("refusals: got %d, want at most 4", got)
	}

	squatter.Close()
	if err := s.WaitFor(testCtx(t), "the bot's connection", func(s *slacktest.Server) bool {
		return s.OpenConnections() == 1 && s.Connections() > s.Refusals()+1
	}); err != nil {
		t.Fatalf("%v\nlogs:\n%s", err, logs)
	}
	if !bytes.Contains([]byte(logs.String()), []byte("too_many_websockets")) {
		t.Errorf("logs do not name the disconnect reason:\n%s", logs)
	}
}

// refresh_requested and warning are followed by a new connection that
// serves envelopes.
func TestSupervisorReconnectsOnRefreshAndWarning(t *testing.T) {
	t.Parallel()
	s := slacktest.New(t, slacktest.WithWarningLead(200*time.Millisecond))
	superviseAgainst(t, s, &syncLog{})
	if err := s.WaitConnections(testCtx(t), 1); err != nil {
		t.Fatal(err)
	}
	for i, reason := range []string{slacktest.DisconnectRefresh, slacktest.DisconnectWarning} {
		if err := s.WaitFor(testCtx(t), "an open connection", func(s *slacktest.Server) bool { return s.OpenConnections() == 1 }); err != nil {
			t.Fatal(err)
		}
		s.Disconnect(reason)
		if err := s.WaitConnections(testCtx(t), i+2); err != nil {
			t.Fatalf("after %s: %v", reason, err)
		}
		if err := s.WaitFor(testCtx(t), "an open connection", func(s *slacktest.Server) bool { return s.OpenConnections() >= 1 }); err != nil {
			t.Fatal(err)
		}
		if _, err := s.SlashCommand(testCtx(t), slacktest.SlashCommand{UserID: "U1", ChannelID: "C1", Command: commands.Command, Text: "help"}); err != nil {
			t.Errorf("envelope after %s: %v", reason, err)
		}
	}
	if v := s.Violations(); len(v) > 0 {
		t.Errorf("violations: %q", v)
	}
}

// link_disabled stops the supervisor with ErrLinkDisabled and no redial.
func TestSupervisorStopsOnLinkDisabled(t *testing.T) {
	t.Parallel()
	s := slacktest.New(t)
	result := superviseAgainst(t, s, &syncLog{})
	if err := s.WaitFor(testCtx(t), "an open connection", func(s *slacktest.Server) bool { return s.OpenConnections() == 1 }); err != nil {
		t.Fatal(err)
	}
	s.DisableLink()
	select {
	case err := <-result:
		if !errors.Is(err, ErrLinkDisabled) {
			t.Errorf("got %v, want ErrLinkDisabled", err)
		}
	case <-testCtx(t).Done():
		t.Fatal("the supervisor did not stop after link_disabled")
	}
	if got := s.Connections(); got != 1 {
		t.Errorf("connections: got %d, want 1 (no redial after link_disabled)", got)
	}
}
