package slacktest

import (
	"math"
	"time"
)

// Limits are the rules of real Slack that a Server may or may not enforce,
// one field per rule. Zero values turn a rule off. New uses DefaultLimits
// unless WithLimits is given; Strict is everything real Slack does.
//
// The Block Kit limits of a single block or text object (50 blocks per
// message, 3,000 characters per section text, 100 blocks per view, …) are
// always enforced; see ValidateBlocks and ValidateView.
type Limits struct {
	// BlockText caps the characters of text across all of a message's blocks
	// (chat.postMessage, chat.postEphemeral, chat.update, response URLs); a
	// message over it is refused with msg_blocks_too_long. Slack does not
	// document this limit; it is seen between 11,341 and 13,300 characters
	// (bolt-js issues 2509 and 2867), so Strict uses 12,000.
	BlockText int

	// PostMessage limits chat.postMessage per channel. Slack allows about one
	// message per second per channel, with short bursts.
	PostMessage Rate
	// PostEphemeral limits chat.postEphemeral for the workspace (Tier 4).
	PostEphemeral Rate
	// Update limits chat.update for the workspace (Tier 3).
	Update Rate
	// Publish limits views.publish for the workspace (Tier 4).
	Publish Rate

	// UnknownChannels refuses calls naming a channel that was not added with
	// AddChannel (or WithChannel) with channel_not_found, as Slack does for a
	// channel that does not exist. Off, such a channel is a public channel
	// that the bot and every user are members of. User IDs (U…, W…) and DM
	// IDs (D…) are always accepted as channels: they name the app's DM.
	UnknownChannels bool

	// ResponseURLTTL is how long a response URL takes posts (Slack: 30
	// minutes); after it a post answers 404 expired_url. The 5 uses per URL
	// are always enforced.
	ResponseURLTTL time.Duration

	// MaxConnections is how many Socket Mode connections the app may hold
	// open (Slack: 10). A connection beyond it gets a too_many_websockets
	// disconnect message instead of hello.
	MaxConnections int

	// PingJitter makes WebSocket pings irregular, as Slack's are: each
	// interval is the ping interval times a random factor in
	// [1-PingJitter, 1+PingJitter]. 0 pings at exactly the interval.
	PingJitter float64

	// EventRetries redelivers an events_api envelope that is not acked within
	// the ack timeout, once per entry, after waiting that long: each retry has
	// a new envelope ID, the same event_id, retry_attempt 1, 2, … and
	// retry_reason "timeout". Slack retries an event three times: at once,
	// after 1 minute and after 5 minutes. Slash commands and interactive
	// envelopes are never redelivered (the user sees a timeout instead).
	EventRetries []time.Duration
}

// Rate is a token bucket: PerMinute calls a minute on average, with bursts
// of up to Burst calls. A call over it is answered HTTP 429 with a
// Retry-After header of the whole seconds until the next call is allowed.
// The zero Rate is no limit.
type Rate struct {
	PerMinute int
	Burst     int
}

// Slack's documented limits, for tests that build expectations.
const (
	// MaxBlockText is the cumulative block-text limit Strict uses.
	MaxBlockText = 12000
	// MaxConnections is how many Socket Mode connections Slack lets an app hold.
	MaxConnections = 10
	// ResponseURLTTL is how long Slack's response URLs take posts.
	ResponseURLTTL = 30 * time.Minute
	// ResponseURLUses is how many posts Slack's response URLs take.
	ResponseURLUses = maxResponseURLUses
)

// Strict is every limit of real Slack the fake knows: the block-text limit,
// per-channel posting (1 a second, bursts of 3), the Tier 3 and Tier 4 method
// rates (chat.update 50 a minute, views.publish and chat.postEphemeral 100 a
// minute, bursts of 5 and 10), unknown channels not found, response URLs
// that expire after 30 minutes, at most 10 Socket Mode connections,
// irregular pings, and event redelivery at once, after 1 and after 5 minutes.
func Strict() Limits {
	return Limits{
		BlockText:       MaxBlockText,
		PostMessage:     Rate{PerMinute: 60, Burst: 3},
		PostEphemeral:   Rate{PerMinute: 100, Burst: 10},
		Update:          Rate{PerMinute: 50, Burst: 5},
		Publish:         Rate{PerMinute: 100, Burst: 10},
		UnknownChannels: true,
		ResponseURLTTL:  ResponseURLTTL,
		MaxConnections:  MaxConnections,
		PingJitter:      0.5,
		EventRetries:    []time.Duration{0, time.Minute, 5 * time.Minute},
	}
}

// DefaultLimits is what New enforces without WithLimits: the rules every
// existing test meets. On: response URLs expire after 30 minutes, at most
// 10 Socket Mode connections, irregular pings, and the always-on Block Kit
// limits. Off (see Strict): the cumulative block-text limit, rate limits,
// unknown channels (they are public channels everyone is in) and event
// redelivery.
func DefaultLimits() Limits {
	return Limits{
		ResponseURLTTL: ResponseURLTTL,
		MaxConnections: MaxConnections,
		PingJitter:     0.5,
	}
}

// WithLimits sets the limits the Server enforces (default DefaultLimits()).
func WithLimits(l Limits) Option { return func(s *Server) { s.rules = l } }

// WithClock sets the clock the Server's limits use: rate limits and response
// URL expiry (default time.Now). Tests advance a fake clock instead of waiting.
func WithClock(now func() time.Time) Option { return func(s *Server) { s.now = now } }

// bucket is one token bucket of a Rate.
type bucket struct {
	tokens float64
	at     time.Time
}

// take takes a token from the bucket of rate r at now. When there is none it
// returns false and how long until there is one.
func (b *bucket) take(r Rate, now time.Time) (bool, time.Duration) {
	perSec := float64(r.PerMinute) / 60
	burst := float64(max(r.Burst, 1))
	if b.at.IsZero() {
		b.tokens, b.at = burst, now
	}
	if now.After(b.at) {
		b.tokens = math.Min(burst, b.tokens+now.Sub(b.at).Seconds()*perSec)
		b.at = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / perSec * float64(time.Second))
}

// rateFor is the Rate of a Web API method and the key of its bucket: per
// channel for chat.postMessage, per workspace for the others.
func (s *Server) rateFor(method, channel string) (Rate, string) {
	switch method {
	case "chat.postMessage":
		return s.rules.PostMessage, method + " " + channel
	case "chat.postEphemeral":
		return s.rules.PostEphemeral, method
	case "chat.update":
		return s.rules.Update, method
	case "views.publish":
		return s.rules.Publish, method
	}
	return Rate{}, ""
}

// throttleLocked applies the method's Rate; ok is false when the call is
// over it, with how long the caller must wait.
func (s *Server) throttleLocked(method, channel string) (ok bool, retryAfter time.Duration) {
	r, key := s.rateFor(method, channel)
	if r.PerMinute <= 0 {
		return true, 0
	}
	b := s.buckets[key]
	if b == nil {
		b = &bucket{}
		s.buckets[key] = b
	}
	return b.take(r, s.now())
}
