// Package slacktest is an in-process fake Slack for end-to-end tests: the Web API
// methods the bot calls (chat.*, views.publish, …), response URLs, and the Socket
// Mode WebSocket that delivers slash commands, button clicks and Events API events
// (app_home_opened).
//
// A test starts one Server per test with New, points the real slack-go client at it
// with slack.OptionAPIURL(s.APIURL()), and drives the bot by sending envelopes
// (SlashCommand, BlockAction). The Server records every call (Calls), keeps the
// current state of channel messages (Messages, Thread), and answers the errors real
// Slack answers when a message breaks Slack's limits, so a bot that would fail in
// production fails in tests too.
//
// Which of Slack's rules the Server enforces is a Limits value (WithLimits):
// DefaultLimits holds the rules every existing test meets, Strict all of them —
// the cumulative block-text limit (msg_blocks_too_long), per-channel and
// per-method rate limits (HTTP 429 with Retry-After), unknown channels not
// found, response URL expiry, at most 10 Socket Mode connections, irregular
// pings and event redelivery. Channels with members (AddChannel) make the bot
// an outsider where it is not a member (not_in_channel, channel_not_found) and
// answer users.conversations; DisableLink and Disconnect send Slack's
// link_disabled, warning, refresh_requested and too_many_websockets messages.
package slacktest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Identities the fake answers with. Tests may use them to build expectations.
const (
	// DefaultBotToken is the bot token the Server accepts unless WithBotToken is given.
	DefaultBotToken = "xoxb-test-bot-token"
	// DefaultAppToken is the app-level token the Server accepts for
	// apps.connections.open unless WithAppToken is given.
	DefaultAppToken = "xapp-test-app-token"
	// BotUserID is the bot's user ID, as auth.test reports it.
	BotUserID = "UBOT"
	// BotID is the bot's bot ID, as auth.test reports it.
	BotID = "B0FAKE"
	// TeamID is the workspace ID in every payload.
	TeamID = "T0FAKE"
	// TeamDomain is the workspace domain in every payload.
	TeamDomain = "fake"
	// AppID is the app ID in every payload and in the hello message.
	AppID = "A0FAKE"
)

// defaultWaitTimeout bounds WaitFor and friends when the caller's context has no deadline.
const defaultWaitTimeout = 10 * time.Second

// Server is a fake Slack. Create it with New; all methods are safe for concurrent use.
type Server struct {
	http       *httptest.Server
	botToken   string
	appToken   string
	pingEvery  time.Duration
	ackTimeout time.Duration
	groups     map[string][]string
	users      map[string]User
	rules      Limits
	now        func() time.Time
	warnLead   time.Duration

	wg        sync.WaitGroup // connection goroutines
	done      chan struct{}  // closed when the server shuts down
	closeOnce sync.Once

	mu          sync.Mutex
	changed     chan struct{} // closed and replaced on every recorded change
	closed      bool
	calls       []Call
	messages    map[string][]*Message // by channel, in ts order, replies included
	nextTS      int64
	nextTicket  int
	tickets     map[string]bool // issued, not yet used
	nextRespURL int
	respURLs    map[string]*responseURL
	conns       []*conn
	connCount   int
	pending     map[string]*pendingAck
	acked       map[string]bool // envelope IDs acked or given up on
	violations  []string
	fails       map[string]*failure
	limits      map[string]*rateLimit
	homes       map[string]*HomeView // published Home tabs, by user
	channels    map[string]*Channel  // channels the test added, by ID
	buckets     map[string]*bucket   // rate limit state, by method (and channel)
	linkOff     bool                 // Socket Mode disabled for the app (link_disabled)
	refusals    int                  // connections answered with a disconnect instead of hello
	nextView    int
	revoked     bool
	pingsPaused bool
	pings       int  // pings sent
	roundRobin  bool // spread envelopes over the open connections
	nextConn    int
	scopes      *[]string // the bot token's scopes; nil: DefaultScopes
	// permalinkBase replaces https://fake.slack.com in permalinks (WithPermalinkBase).
	permalinkBase string

	httpConns atomic.Int64 // TCP connections accepted (Web API, response URLs, Socket Mode)
}

// User is a workspace member users.info knows about.
type User struct {
	ID       string // e.g. "U123"
	Name     string // the username
	RealName string // the display name people see
	IsBot    bool   // the user is a bot
	Deleted  bool   // the user is deactivated
}

// Option configures a Server.
type Option func(*Server)

// WithBotToken sets the bot token (xoxb-…) the Web API accepts.
func WithBotToken(token string) Option { return func(s *Server) { s.botToken = token } }

// WithAppToken sets the app-level token (xapp-…) apps.connections.open accepts.
func WithAppToken(token string) Option { return func(s *Server) { s.appToken = token } }

// WithPingInterval sets how often the Server sends WebSocket pings (default 100ms).
// The slack-go client drops a connection that goes without a ping for its
// OptionPingInterval (30s by default), checked on a ticker of that period.
func WithPingInterval(d time.Duration) Option { return func(s *Server) { s.pingEvery = d } }

// WithAckTimeout sets how long SlashCommand, BlockAction and SendEnvelope wait for
// an ack when their context has no deadline. The default is Slack's 3 seconds.
func WithAckTimeout(d time.Duration) Option { return func(s *Server) { s.ackTimeout = d } }

// WithRoundRobin spreads envelopes over all open connections in turn, as
// Slack does when an app holds several (e.g. bot replicas). Without it every
// envelope goes to the newest open connection.
func WithRoundRobin() Option { return func(s *Server) { s.roundRobin = true } }

// WithUserGroup makes usergroups.users.list answer members for the group ID.
func WithUserGroup(id string, members ...string) Option {
	return func(s *Server) { s.groups[id] = slices.Clone(members) }
}

// WithPermalinkBase makes chat.getPermalink answer links under base (e.g.
// "http://127.0.0.1:8080", a page that shows the workspace, as the demo's)
// instead of https://fake.slack.com; path and query keep Slack's shape.
func WithPermalinkBase(base string) Option {
	return func(s *Server) { s.permalinkBase = strings.TrimSuffix(base, "/") }
}

// WithUser makes users.info answer u for u.ID. Without it users.info invents a
// minimal user for any ID that starts with U or W.
func WithUser(u User) Option { return func(s *Server) { s.users[u.ID] = u } }

// WithWarningLead sets how long after a "warning" disconnect message the
// Server sends "refresh_requested" and stops sending envelopes on the
// connection (default 10s, about what Slack leaves).
func WithWarningLead(d time.Duration) Option { return func(s *Server) { s.warnLead = d } }

// New starts a fake Slack that is shut down when the test ends.
func New(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	s, err := NewServer(opts...)
	if err != nil {
		tb.Fatalf("slacktest: %v", err)
	}
	tb.Cleanup(s.Close)
	return s
}

// NewServer starts a fake Slack outside a test, e.g. for the demo, listening
// on a free port of 127.0.0.1. The caller stops it with Close.
func NewServer(opts ...Option) (*Server, error) {
	s := &Server{
		botToken:   DefaultBotToken,
		appToken:   DefaultAppToken,
		pingEvery:  100 * time.Millisecond,
		ackTimeout: 3 * time.Second,
		groups:     map[string][]string{},
		users:      map[string]User{},
		done:       make(chan struct{}),
		changed:    make(chan struct{}),
		messages:   map[string][]*Message{},
		tickets:    map[string]bool{},
		respURLs:   map[string]*responseURL{},
		pending:    map[string]*pendingAck{},
		acked:      map[string]bool{},
		fails:      map[string]*failure{},
		limits:     map[string]*rateLimit{},
		homes:      map[string]*HomeView{},
		channels:   map[string]*Channel{},
		buckets:    map[string]*bucket{},
		rules:      DefaultLimits(),
		now:        time.Now,
		warnLead:   10 * time.Second,
	}
	for _, opt := range opts {
		opt(s)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen on a free port of 127.0.0.1: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/{method}", s.serveAPI)
	mux.HandleFunc("/response/{id}", s.serveResponseURL)
	mux.HandleFunc("/link/", s.serveLink)
	s.http = &httptest.Server{Listener: ln, Config: &http.Server{Handler: mux, ConnState: func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.httpConns.Add(1)
		}
	}}}
	s.http.Start()
	return s, nil
}

// Close stops every connection and goroutine, then the HTTP server. It may
// be called more than once.
func (s *Server) Close() { s.closeOnce.Do(s.close) }

// close stops every connection and goroutine, then the HTTP server.
func (s *Server) close() {
	s.mu.Lock()
	s.closed = true
	conns := slices.Clone(s.conns)
	s.mu.Unlock()
	close(s.done)
	for _, c := range conns {
		c.ws.NetConn().Close()
	}
	s.wg.Wait()
	s.http.Close()
}

// HTTPConnections counts the TCP connections the fake has accepted (Web API
// calls, response URL posts and Socket Mode links), e.g. to check that a
// client reuses keep-alive connections.
func (s *Server) HTTPConnections() int { return int(s.httpConns.Load()) }

// URL is the base URL of the fake, "http://127.0.0.1:PORT".
func (s *Server) URL() string { return s.http.URL }

// APIURL is the Web API base URL for slack.OptionAPIURL, with its trailing slash:
// "http://127.0.0.1:PORT/api/".
func (s *Server) APIURL() string { return s.http.URL + "/api/" }

// BotToken is the bot token the Web API accepts.
func (s *Server) BotToken() string { return s.botToken }

// AppToken is the app-level token apps.connections.open accepts.
func (s *Server) AppToken() string { return s.appToken }

// ResponseURL mints a new response URL, "http://127.0.0.1:PORT/response/N". Posts to
// it are recorded as calls with Method "response_url".
func (s *Server) ResponseURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mintResponseURLLocked("", "")
}

// NewResponseURL mints a response URL as Slack puts one in a payload:
// in_channel responses to it are posted in channel, and replace_original and
// delete_original act on the channel message original ("" when the message
// is ephemeral or there is none). SlashCommand and BlockAction use a
// caller's URL as given, so a caller that mints it first knows which of
// its messages a response belongs to before the response can arrive.
func (s *Server) NewResponseURL(channel, original string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mintResponseURLLocked(channel, original)
}

// mintResponseURLLocked mints a response URL for channel (where in_channel
// responses go); original names the channel message replace_original and
// delete_original act on, "" when there is none or it is ephemeral.
func (s *Server) mintResponseURLLocked(channel, original string) string {
	s.nextRespURL++
	u := fmt.Sprintf("%s/response/%d", s.http.URL, s.nextRespURL)
	s.respURLs[u] = &responseURL{channel: channel, original: original, minted: s.now()}
	return u
}

// FailMethod makes the next n calls of a Web API method answer
// {"ok":false,"error":code}. A negative n fails every call from now on; n == 0
// clears the failure.
func (s *Server) FailMethod(method, code string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n == 0 {
		delete(s.fails, method)
		return
	}
	s.fails[method] = &failure{code: code, left: n}
}

// RateLimit makes the next n calls of a Web API method answer HTTP 429 with a
// Retry-After header of retryAfter, rounded up to whole seconds as Slack sends it.
// A negative n limits every call from now on; n == 0 clears the limit.
func (s *Server) RateLimit(method string, retryAfter time.Duration, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n == 0 {
		delete(s.limits, method)
		return
	}
	s.limits[method] = &rateLimit{retryAfter: retryAfter, left: n}
}

// RevokeAppToken makes apps.connections.open answer invalid_auth from now on, so
// the Socket Mode client cannot reconnect.
func (s *Server) RevokeAppToken() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.revoked = true
}

// Calls returns every Web API call and response URL post so far, in order.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// CallCount returns how many calls Calls would return, without copying them.
func (s *Server) CallCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls)
}

// CallsTo returns the calls of one method ("chat.postMessage", "response_url", …).
func (s *Server) CallsTo(method string) []Call {
	var out []Call
	for _, c := range s.Calls() {
		if c.Method == method {
			out = append(out, c)
		}
	}
	return out
}

// Messages returns the current state of a channel's top-level messages (thread
// replies excluded; see Thread), oldest first, with chat.update and
// replace_original applied. Ephemeral messages are not part of a channel's state;
// find them in Calls.
func (s *Server) Messages(channel string) []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Message
	for _, m := range s.messages[channel] {
		if m.ThreadTS == "" || m.ThreadTS == m.TS {
			out = append(out, *m)
		}
	}
	return out
}

// Thread returns the replies to the message ts in channel, oldest first; the
// parent itself is not included.
func (s *Server) Thread(channel, ts string) []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Message
	for _, m := range s.messages[channel] {
		if m.ThreadTS == ts && m.TS != ts {
			out = append(out, *m)
		}
	}
	return out
}

// Violations returns what the bot did that real Slack would reject or ignore:
// acks for unknown envelopes or for hello/disconnect (which carry no envelope ID),
// duplicate or late acks, acks of 20KB or more, malformed frames, and replies to
// threads that do not exist. A well-behaved bot leaves it empty.
func (s *Server) Violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.violations)
}

// violationLocked records a violation.
func (s *Server) violationLocked(format string, args ...any) {
	s.violations = append(s.violations, fmt.Sprintf(format, args...))
	s.notifyLocked()
}

// notifyLocked wakes every waiter.
func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// WaitFor waits until cond holds, re-checking it whenever the Server records
// something and at least every 10ms. cond runs without the Server's lock held, so
// it may call any Server method. When ctx has no deadline WaitFor gives up after
// 10s. The error names desc.
func (s *Server) WaitFor(ctx context.Context, desc string, cond func(*Server) bool) error {
	ctx, cancel := withDefaultTimeout(ctx, defaultWaitTimeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		s.mu.Lock()
		changed := s.changed
		s.mu.Unlock()
		if cond(s) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("slacktest: waiting for %s: %w", desc, ctx.Err())
		case <-s.done:
			return fmt.Errorf("slacktest: waiting for %s: server closed", desc)
		case <-changed:
		case <-tick.C:
		}
	}
}

// WaitCall waits for the first recorded call of method for which match returns
// true (a nil match accepts any), including calls made before WaitCall was called.
func (s *Server) WaitCall(ctx context.Context, method string, match func(Call) bool) (Call, error) {
	var found Call
	err := s.WaitFor(ctx, "a "+method+" call", func(s *Server) bool {
		for _, c := range s.CallsTo(method) {
			if match == nil || match(c) {
				found = c
				return true
			}
		}
		return false
	})
	return found, err
}

// withDefaultTimeout bounds ctx by d unless it already has a deadline.
func withDefaultTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// newID returns a random UUID (version 4), the shape of Slack's envelope IDs.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return strings.Join([]string{h[0:8], h[8:12], h[12:16], h[16:20], h[20:32]}, "-")
}

// Call is one recorded Web API call or response URL post.
type Call struct {
	// Method is the Web API method ("chat.postMessage") or "response_url".
	Method string
	// Channel is the channel the call names, if any.
	Channel string
	// TS is the message the call created or changed: the new ts of a post, the
	// ts of an update, the message_ts of an ephemeral post.
	TS string
	// ThreadTS is the thread the message was posted in, if any.
	ThreadTS string
	// Text is the text field as sent.
	Text string
	// Blocks is the blocks field as sent (a JSON array), or nil.
	Blocks json.RawMessage
	// ResponseType is "in_channel" or "ephemeral" for response URL posts.
	ResponseType string
	// ReplaceOriginal is set on response URL posts that replace the original message.
	ReplaceOriginal bool
	// DeleteOriginal is set on response URL posts that delete the original message.
	DeleteOriginal bool
	// At is when the fake received the call.
	At time.Time
	// User is the user parameter (chat.postEphemeral, users.info).
	User string
	// Form holds the request parameters: form values, or a JSON body's top-level
	// fields with non-string values as JSON text. The token is removed.
	Form url.Values
	// Body is the raw request body.
	Body []byte
	// URL is the URL the request was sent to.
	URL string
	// Status is the HTTP status the fake answered.
	Status int
	// Error is the Slack error code the fake answered ("" when ok).
	Error string
}

// AllText is the call's text and the text of its blocks (see BlocksText).
func (c Call) AllText() string { return joinText(c.Text, BlocksText(c.Blocks)) }

// Message is the current state of one channel message.
type Message struct {
	// Channel is the channel the message is in.
	Channel string
	// TS is the message's timestamp, its ID within the channel.
	TS string
	// ThreadTS is the parent's ts for a thread reply, "" otherwise.
	ThreadTS string
	// User is who posted it: BotUserID for the bot.
	User string
	// Text is the current text.
	Text string
	// Blocks is the current blocks (a JSON array), or nil.
	Blocks json.RawMessage
	// Updates counts chat.update calls and replace_original posts applied to it.
	Updates int
}

// AllText is the message's text and the text of its blocks (see BlocksText).
func (m Message) AllText() string { return joinText(m.Text, BlocksText(m.Blocks)) }

func joinText(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "\n" + b
}

type failure struct {
	code string
	left int
}

type rateLimit struct {
	retryAfter time.Duration
	left       int
}

type responseURL struct {
	channel  string // where in_channel responses are posted
	original string // ts of the channel message to replace or delete, if any
	uses     int
	minted   time.Time
}
