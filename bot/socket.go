package bot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"
)

// ErrFatalAuth marks a Socket Mode failure that retrying cannot fix.
var ErrFatalAuth = errors.New("slack refused the credentials")

// ErrLinkDisabled marks Slack's link_disabled disconnect: Socket Mode was
// turned off for the app, and Slack asks apps not to reconnect.
var ErrLinkDisabled = errors.New("slack disabled the Socket Mode link (link_disabled)")

// How often the bot may dial Slack's Socket Mode: at most maxDials in any
// dialWindow, and after a connection that lived less than healthyFor, each
// redial waits twice as long as the one before (first 1s, at most
// maxDialBackoff). A connection that lived longer is redialled at once:
// Slack recycles healthy connections every few hours (refresh_requested).
const (
	maxDials       = 10
	dialWindow     = time.Minute
	healthyFor     = time.Minute
	maxDialBackoff = 30 * time.Second
)

// superviseSocket keeps the Socket Mode connection up: slack-go reconnects
// on Slack's disconnect messages itself (refresh_requested, warning,
// too_many_websockets), paced here by a dialGate; when RunContext gives up
// we redial, unless Slack refused the credentials or disabled the link.
func (b *Bot) superviseSocket(ctx context.Context) error {
	w := newSocketWatch(ctx, b.log, time.Now)
	w.install(b.sm)
	const minBackoff, maxBackoff = time.Second, time.Minute
	backoff := minBackoff
	for {
		started := time.Now()
		runCtx, cancelRun := context.WithCancel(ctx)
		w.setCancel(cancelRun)
		err := b.sm.RunContext(runCtx)
		cancelRun()
		b.connected.Store(false)
		if w.linkDisabled() {
			// Logged once, by whoever handles Run's error.
			return fmt.Errorf("socket mode: %w: Socket Mode was turned off for this Slack app (or the app was disabled); "+
				"turn it on again under Settings → Socket Mode in the app's configuration at api.slack.com/apps, then restart the bot", ErrLinkDisabled)
		}
		if ctx.Err() != nil {
			return nil
		}
		if isFatalSlackError(err) {
			return fmt.Errorf("socket mode: %w: %w (check SLACK_APP_TOKEN, its connections:write scope, and that Socket Mode is enabled)", ErrFatalAuth, err)
		}
		// A connection that lived a while was healthy: start the backoff over.
		if time.Since(started) > maxBackoff {
			backoff = minBackoff
		}
		b.metrics.Reconnects.Inc()
		b.log.Warn().Err(err).Dur("backoff", backoff).Msg("socket mode connection lost; redialling")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// isFatalSlackError tells whether Slack refused the credentials, which no
// amount of redialling fixes.
func isFatalSlackError(err error) bool {
	var se slack.SlackErrorResponse
	if errors.As(err, &se) {
		switch se.Err {
		case "invalid_auth", "account_inactive", "not_authed", "token_revoked", "token_expired", "not_allowed_token_type":
			return true
		}
	}
	var sc slack.StatusCodeError
	return errors.As(err, &sc) && sc.Code == http.StatusNotFound
}

// The lines of slack-go's socketmode debug log a socketWatch acts on.
// slack-go turns Slack's disconnect message into an internal redial
// without an event, and redials with no hook before apps.connections.open:
// its debug log is the one place that shows both, synchronously, from the
// goroutine that redials. The supervisor tests run the real slack-go
// against the fake Slack, so a slack-go that words these differently fails
// them.
const (
	logReceived = "Received WebSocket message: " // followed by the message's (redacted) JSON
	logDialling = "Starting SocketMode"          // just before apps.connections.open
)

// socketWatch reads slack-go's socketmode debug log (see logReceived): it
// learns the reason of each disconnect message, paces redials with a
// dialGate, and on link_disabled ends the RunContext it watches. It keeps
// nothing else from the log: the payloads in it are users' data.
type socketWatch struct {
	ctx  context.Context // the supervisor's: a pending dial ends with it
	log  zerolog.Logger
	gate *dialGate

	mu       sync.Mutex
	cancel   context.CancelFunc // ends the current RunContext
	disabled bool
}

func newSocketWatch(ctx context.Context, log zerolog.Logger, now func() time.Time) *socketWatch {
	return &socketWatch{ctx: ctx, log: log, gate: newDialGate(now)}
}

// install makes sm report to w. It must run before sm.RunContext.
func (w *socketWatch) install(sm *socketmode.Client) {
	socketmode.OptionLog(w)(sm)
	socketmode.OptionDebug(true)(sm)
}

func (w *socketWatch) setCancel(cancel context.CancelFunc) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.cancel = cancel
}

// linkDisabled tells whether Slack sent link_disabled.
func (w *socketWatch) linkDisabled() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.disabled
}

// Output takes one line of slack-go's debug log (the log.Logger method
// slack-go calls).
func (w *socketWatch) Output(_ int, line string) error {
	switch {
	case strings.HasPrefix(line, logDialling):
		w.mu.Lock()
		disabled := w.disabled
		w.mu.Unlock()
		if disabled {
			return nil // RunContext is being ended; don't wait
		}
		if wait := w.gate.wait(w.ctx); wait > 0 {
			w.log.Info().Dur("waited", wait).Msg("socket mode: paced a redial")
		}
	case strings.HasPrefix(line, logReceived):
		// Every envelope passes here, on the socket's read loop, before its
		// ack: decode only what can be a disconnect message.
		if !strings.Contains(line, `"disconnect"`) {
			return nil
		}
		var msg struct {
			Type   string `json:"type"`
			Reason string `json:"reason"`
		}
		if json.Unmarshal([]byte(strings.TrimPrefix(line, logReceived)), &msg) != nil || msg.Type != "disconnect" {
			return nil
		}
		w.disconnected(msg.Reason)
	}
	return nil
}

// disconnected acts on Slack's disconnect message.
func (w *socketWatch) disconnected(reason string) {
	if reason != "link_disabled" {
		// refresh_requested, warning, too_many_websockets: slack-go redials,
		// through the gate.
		w.log.Info().Str("reason", reason).Msg("socket mode: Slack asked to reconnect")
		return
	}
	w.mu.Lock()
	w.disabled = true
	cancel := w.cancel
	w.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// dialGate paces Socket Mode dials: at most maxDials in any dialWindow, and
// exponential backoff between the dials of connections that did not last.
type dialGate struct {
	now     func() time.Time
	mu      sync.Mutex
	dials   []time.Time // the dials within the last dialWindow
	backoff time.Duration
}

func newDialGate(now func() time.Time) *dialGate { return &dialGate{now: now} }

// wait blocks until the next dial is allowed (or ctx ends) and records it;
// it returns how long it waited.
func (g *dialGate) wait(ctx context.Context) time.Duration {
	g.mu.Lock()
	now := g.now()
	delay := time.Duration(0)
	if n := len(g.dials); n > 0 {
		last := g.dials[n-1]
		if now.Sub(last) >= healthyFor {
			g.backoff = 0 // the last connection was healthy: redial at once
		} else {
			g.backoff = min(max(2*g.backoff, time.Second), maxDialBackoff)
			delay = max(0, last.Add(g.backoff).Sub(now))
		}
		if n >= maxDials {
			delay = max(delay, g.dials[n-maxDials].Add(dialWindow).Sub(now))
		}
	}
	at := now.Add(delay)
	g.dials = append(g.dials, at)
	// Keep only what the window needs.
	if len(g.dials) > maxDials {
		g.dials = g.dials[len(g.dials)-maxDials:]
	}
	g.mu.Unlock()
	if delay <= 0 {
		return 0
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	return delay
}
