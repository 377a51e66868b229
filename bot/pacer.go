package bot

// Pacing: the bot keeps within Slack's rate limits itself instead of
// bumping into them. Slack allows about one chat.postMessage a second per
// channel (with short bursts) and rates chat.update (Tier 3), views.publish
// and chat.postEphemeral (Tier 4) per workspace; a call over a limit is
// answered HTTP 429 with Retry-After and is not taken, so it is safe to try
// again. golang.org/x/time/rate is the Go team's token bucket; we use it
// rather than writing our own.

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/slack-go/slack"
	"golang.org/x/time/rate"
)

// pace is one rate of Slack's: calls a second and the burst it allows.
type pace struct {
	every time.Duration
	burst int
}

// Slack's rates, as the bot keeps them (a little below Slack's own).
var (
	postPace      = pace{every: 1100 * time.Millisecond, burst: 3} // chat.postMessage, per channel
	updatePace    = pace{every: 1300 * time.Millisecond, burst: 5} // chat.update, Tier 3 (50 a minute)
	publishPace   = pace{every: 650 * time.Millisecond, burst: 10} // views.publish, Tier 4 (100 a minute)
	ephemeralPace = pace{every: 650 * time.Millisecond, burst: 10} // chat.postEphemeral, Tier 4
)

// maxRateLimited is how many 429s in a row one call takes before it gives
// up (its context usually ends first).
const maxRateLimited = 20

// pacedAPI is a SlackAPI that waits its turn before each posting call: per
// channel for chat.postMessage, per workspace for the other rated methods.
// A 429 (after the client's own retries) holds the whole key back for its
// Retry-After and the call is tried again, so Slack being busy delays a
// message but never loses it. Posts to a response_url are not rated.
type pacedAPI struct {
	SlackAPI
	mu    sync.Mutex
	keys  map[string]*gate
	sleep func(ctx context.Context, d time.Duration) error
}

// gate is one key's token bucket and how long a 429 holds it back.
type gate struct {
	lim       *rate.Limiter
	notBefore time.Time
}

// newPacedAPI wraps api with Slack's rates (nil stays nil).
func newPacedAPI(api SlackAPI) SlackAPI {
	if api == nil {
		return nil
	}
	return &pacedAPI{SlackAPI: api, keys: map[string]*gate{}, sleep: sleepCtx}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *pacedAPI) gateOf(key string, pc pace) *gate {
	p.mu.Lock()
	defer p.mu.Unlock()
	g := p.keys[key]
	if g == nil {
		g = &gate{lim: rate.NewLimiter(rate.Every(pc.every), pc.burst)}
		p.keys[key] = g
	}
	return g
}

// do runs call within key's rate, trying again after each 429.
func (p *pacedAPI) do(ctx context.Context, key string, pc pace, call func() error) error {
	g := p.gateOf(key, pc)
	for try := 0; ; try++ {
		p.mu.Lock()
		hold := time.Until(g.notBefore)
		p.mu.Unlock()
		if err := p.sleep(ctx, hold); err != nil {
			return err
		}
		if err := g.lim.Wait(ctx); err != nil {
			return err
		}
		err := call()
		var rl *slack.RateLimitedError
		if !errors.As(err, &rl) || try >= maxRateLimited {
			return err
		}
		wait := max(rl.RetryAfter, time.Second)
		p.mu.Lock()
		if nb := time.Now().Add(wait); nb.After(g.notBefore) {
			g.notBefore = nb
		}
		p.mu.Unlock()
	}
}

// PostMessageContext posts within the channel's rate; a response_url post
// (no channel) goes at once.
func (p *pacedAPI) PostMessageContext(ctx context.Context, channelID string, options ...slack.MsgOption) (string, string, error) {
	if channelID == "" {
		return p.SlackAPI.PostMessageContext(ctx, channelID, options...)
	}
	var ch, ts string
	err := p.do(ctx, "chat.postMessage "+channelID, postPace, func() (err error) {
		ch, ts, err = p.SlackAPI.PostMessageContext(ctx, channelID, options...)
		return err
	})
	return ch, ts, err
}

// UpdateMessageContext updates within chat.update's rate.
func (p *pacedAPI) UpdateMessageContext(ctx context.Context, channelID, timestamp string, options ...slack.MsgOption) (string, string, string, error) {
	var a, b, c string
	err := p.do(ctx, "chat.update", updatePace, func() (err error) {
		a, b, c, err = p.SlackAPI.UpdateMessageContext(ctx, channelID, timestamp, options...)
		return err
	})
	return a, b, c, err
}

// PostEphemeralContext posts within chat.postEphemeral's rate.
func (p *pacedAPI) PostEphemeralContext(ctx context.Context, channelID, userID string, options ...slack.MsgOption) (string, error) {
	var ts string
	err := p.do(ctx, "chat.postEphemeral", ephemeralPace, func() (err error) {
		ts, err = p.SlackAPI.PostEphemeralContext(ctx, channelID, userID, options...)
		return err
	})
	return ts, err
}

// PublishViewContext publishes within views.publish's rate.
func (p *pacedAPI) PublishViewContext(ctx context.Context, req slack.PublishViewContextRequest) (*slack.ViewResponse, error) {
	var v *slack.ViewResponse
	err := p.do(ctx, "views.publish", publishPace, func() (err error) {
		v, err = p.SlackAPI.PublishViewContext(ctx, req)
		return err
	})
	return v, err
}

// endsInFlight counts, per request, the JobEnds calls posting now.
type endsInFlight struct {
	mu sync.Mutex
	n  map[string]int
}

func (e *endsInFlight) add(id string, d int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n == nil {
		e.n = map[string]int{}
	}
	e.n[id] += d
	if e.n[id] <= 0 {
		delete(e.n, id)
	}
}

func (e *endsInFlight) busy(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n[id] > 0
}
