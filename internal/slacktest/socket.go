package slacktest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	mathrand "math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// maxAckSize is Slack's limit for a Socket Mode ack frame: frames of 20KB or more
// are silently dropped.
const maxAckSize = 20 * 1024

// ErrNoConnection is returned when an envelope is sent while no Socket Mode
// connection is open (or every open one was asked to disconnect).
var ErrNoConnection = errors.New("slacktest: no open Socket Mode connection")

// Ack is the bot's answer to one envelope.
type Ack struct {
	// EnvelopeID is the envelope the ack answers.
	EnvelopeID string
	// Payload is the ack's payload (e.g. a slash command's immediate response), or nil.
	Payload json.RawMessage
	// Size is the size of the whole ack frame in bytes.
	Size int
	// Latency is the time from sending the envelope to receiving its ack.
	Latency time.Duration
	// ResponseURL is the response URL the envelope's payload carried, if any.
	ResponseURL string
	// RetryAttempt is the acked envelope's retry_attempt: 0 for the first
	// delivery.
	RetryAttempt int
}

// SlashCommand is an invocation of a slash command. Empty TeamID, ResponseURL and
// TriggerID are filled in (ResponseURL with a freshly minted one); empty UserName
// and ChannelName default to the lower-cased IDs.
type SlashCommand struct {
	UserID      string // who ran the command, e.g. "U123"
	UserName    string // their username; defaults to the lower-cased UserID
	ChannelID   string // where it was run, e.g. "C123"
	ChannelName string // defaults to the lower-cased ChannelID
	Command     string // e.g. "/geminidb-patch"
	Text        string // everything after the command
	TeamID      string // defaults to TeamID
	ResponseURL string // defaults to a freshly minted response URL
	TriggerID   string // defaults to a random trigger ID
	// RetryAttempt > 0 marks the envelope as Slack's redelivery of the
	// same command (same trigger ID and response URL when given).
	RetryAttempt int
}

// BlockAction is a click on a button. Empty TeamID, ResponseURL and TriggerID are
// filled in; the minted ResponseURL's replace_original and delete_original act on
// the channel message MessageTS unless Ephemeral is set.
type BlockAction struct {
	UserID      string // who clicked
	UserName    string // their username; defaults to the lower-cased UserID
	ChannelID   string // the channel of the message
	ChannelName string // defaults to the lower-cased ChannelID
	ActionID    string // the button's action_id
	BlockID     string // the block_id of the block holding the button
	Value       string // the button's value
	Text        string // the button's label; defaults to ActionID
	MessageTS   string // the message that carries the button
	ThreadTS    string // the thread that message is in, if any
	Ephemeral   bool   // the message is ephemeral (container.is_ephemeral)
	TeamID      string // defaults to TeamID
	ResponseURL string // defaults to a freshly minted response URL
	TriggerID   string // defaults to a random trigger ID
}

// conn is one Socket Mode WebSocket connection.
type conn struct {
	ws      *websocket.Conn
	writeMu sync.Mutex    // gorilla allows one writer at a time
	gone    chan struct{} // closed when the read loop ends

	// Guarded by Server.mu.
	draining bool // sent a disconnect; no more envelopes
	dropped  bool // closed by DropConnections
}

func (c *conn) write(frame []byte) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return c.ws.WriteMessage(websocket.TextMessage, frame)
}

// envelope is a Socket Mode message from Slack that expects an ack.
type envelope struct {
	EnvelopeID             string          `json:"envelope_id"`
	Type                   string          `json:"type"`
	AcceptsResponsePayload bool            `json:"accepts_response_payload"`
	RetryAttempt           int             `json:"retry_attempt"`
	RetryReason            string          `json:"retry_reason"`
	Payload                json.RawMessage `json:"payload"`
}

// pendingAck waits for the ack of one envelope.
type pendingAck struct {
	sent        time.Time
	responseURL string
	retry       int
	result      chan ackResult // buffered: the reader never blocks
}

type ackResult struct {
	ack Ack
	err error
}

// Envelope fates recorded in Server.acked, to tell duplicate acks from late ones.
const (
	envAcked     = true
	envAbandoned = false
)

// serveLink upgrades a ticket from apps.connections.open to a Socket Mode connection.
func (s *Server) serveLink(w http.ResponseWriter, r *http.Request) {
	ticket := r.URL.Query().Get("ticket")
	s.mu.Lock()
	valid := s.tickets[ticket] && !s.closed
	delete(s.tickets, ticket)
	s.mu.Unlock()
	if !valid {
		http.Error(w, "invalid or used ticket", http.StatusUnauthorized)
		return
	}
	// The client sends Origin: https://api.slack.com, which is not this host.
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	ws, err := up.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade has answered the client
	}
	c := &conn{ws: ws, gone: make(chan struct{})}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ws.Close()
		return
	}
	s.conns = append(s.conns, c)
	s.connCount++
	live := s.openLocked()
	refusal := ""
	switch {
	case s.linkOff:
		refusal = DisconnectLinkDisabled
	case s.rules.MaxConnections > 0 && live > s.rules.MaxConnections:
		refusal = DisconnectTooManyWebsockets
	}
	if refusal != "" {
		// Slack answers such a connection with a disconnect message instead
		// of hello; it takes no envelopes.
		c.draining = true
		s.refusals++
	}
	s.wg.Add(2)
	s.notifyLocked()
	s.mu.Unlock()

	if refusal != "" {
		_ = c.write(disconnectFrame(refusal))
	} else {
		hello, _ := json.Marshal(map[string]any{
			"type":            "hello",
			"num_connections": live,
			"debug_info":      map[string]any{"host": "fake", "build_number": 1, "approximate_connection_time": 18060},
			"connection_info": map[string]any{"app_id": AppID},
		})
		_ = c.write(hello)
	}

	go func() {
		defer s.wg.Done()
		s.ping(c)
	}()
	defer s.wg.Done()
	s.read(c)
}

// ping sends a WebSocket ping every ping interval, irregularly by
// Limits.PingJitter, until the connection ends.
func (s *Server) ping(c *conn) {
	if s.pingEvery <= 0 {
		return
	}
	next := func() time.Duration {
		j := max(0, min(1, s.rules.PingJitter))
		return time.Duration(float64(s.pingEvery) * (1 - j + 2*j*mathrand.Float64()))
	}
	tick := time.NewTimer(next())
	defer tick.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-c.gone:
			return
		case <-tick.C:
			tick.Reset(next())
			s.mu.Lock()
			paused := s.pingsPaused
			s.mu.Unlock()
			if paused {
				continue
			}
			// WriteControl may run concurrently with other writes.
			if err := c.ws.WriteControl(websocket.PingMessage, []byte("ping"), time.Now().Add(time.Second)); err != nil {
				return
			}
			s.mu.Lock()
			s.pings++
			s.notifyLocked()
			s.mu.Unlock()
		}
	}
}

// Pings is how many WebSocket pings the server has sent so far.
func (s *Server) Pings() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pings
}

// read handles the client's frames until the connection fails, then forgets it.
func (s *Server) read(c *conn) {
	defer func() {
		close(c.gone)
		c.ws.Close()
		s.mu.Lock()
		s.conns = slices.DeleteFunc(s.conns, func(o *conn) bool { return o == c })
		s.notifyLocked()
		s.mu.Unlock()
	}()
	for {
		typ, data, err := c.ws.ReadMessage()
		if err != nil {
			return
		}
		now := time.Now()
		s.mu.Lock()
		s.ackLocked(typ, data, now)
		s.mu.Unlock()
	}
}

// ackLocked matches one frame from the client to the envelope it acks.
func (s *Server) ackLocked(typ int, data []byte, now time.Time) {
	if typ != websocket.TextMessage {
		s.violationLocked("non-text frame (type %d) from the client", typ)
		return
	}
	var frame struct {
		EnvelopeID *string         `json:"envelope_id"`
		Payload    json.RawMessage `json:"payload"`
	}
	if err := json.Unmarshal(data, &frame); err != nil {
		s.violationLocked("frame is not a JSON object: %s", abbrev(data))
		return
	}
	if frame.EnvelopeID == nil {
		s.violationLocked("frame without envelope_id: %s", abbrev(data))
		return
	}
	id := *frame.EnvelopeID
	if id == "" {
		s.violationLocked("ack with an empty envelope_id (hello and disconnect carry none and must not be acked): %s", abbrev(data))
		return
	}
	p := s.pending[id]
	if p == nil {
		switch fate, known := s.acked[id]; {
		case !known:
			s.violationLocked("ack for unknown envelope_id %s", id)
		case fate: // envAcked
			s.violationLocked("duplicate ack for envelope_id %s", id)
		default:
			s.violationLocked("late ack for envelope_id %s: the sender had stopped waiting", id)
		}
		return
	}
	delete(s.pending, id)
	s.acked[id] = envAcked
	if string(frame.Payload) == "null" {
		frame.Payload = nil
	}
	res := ackResult{ack: Ack{
		EnvelopeID:   id,
		Payload:      frame.Payload,
		Size:         len(data),
		Latency:      now.Sub(p.sent),
		ResponseURL:  p.responseURL,
		RetryAttempt: p.retry,
	}}
	if len(data) >= maxAckSize {
		s.violationLocked("ack for envelope_id %s is %d bytes; Slack drops acks of %d bytes or more", id, len(data), maxAckSize)
		res.err = fmt.Errorf("slacktest: ack for envelope %s is %d bytes; Slack drops acks of %d bytes or more", id, len(data), maxAckSize)
	}
	p.result <- res
	s.notifyLocked()
}

func abbrev(b []byte) string {
	const max = 200
	if len(b) > max {
		return string(b[:max]) + "…"
	}
	return string(b)
}

// openLocked counts the connections that can take envelopes.
func (s *Server) openLocked() int {
	n := 0
	for _, c := range s.conns {
		if !c.draining && !c.dropped {
			n++
		}
	}
	return n
}

// Connections returns how many Socket Mode connections have been opened so far,
// including closed ones.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connCount
}

// OpenConnections returns how many Socket Mode connections are open and not
// asked to disconnect.
func (s *Server) OpenConnections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.openLocked()
}

// WaitConnections waits until at least n connections have been opened in total.
func (s *Server) WaitConnections(ctx context.Context, n int) error {
	return s.WaitFor(ctx, fmt.Sprintf("%d Socket Mode connections", n), func(s *Server) bool {
		return s.Connections() >= n
	})
}

// The reasons of Slack's Socket Mode disconnect messages.
const (
	// DisconnectRefresh: Slack recycles the connection; reconnect.
	DisconnectRefresh = "refresh_requested"
	// DisconnectWarning: a refresh_requested follows in about 10 seconds;
	// the connection works until then.
	DisconnectWarning = "warning"
	// DisconnectTooManyWebsockets: the app holds more connections than
	// Slack allows (10); the new one is refused.
	DisconnectTooManyWebsockets = "too_many_websockets"
	// DisconnectLinkDisabled: Socket Mode was turned off for the app; the
	// client must not reconnect.
	DisconnectLinkDisabled = "link_disabled"
)

func disconnectFrame(reason string) []byte {
	frame, _ := json.Marshal(map[string]any{"type": "disconnect", "reason": reason, "debug_info": map[string]any{"host": "fake"}})
	return frame
}

// Disconnect sends Slack's disconnect message to every open connection, as Slack
// does before it recycles a connection; reason "" means DisconnectRefresh. No
// more envelopes go to those connections, and the client must reconnect without
// acking the message. DisconnectWarning is different, as with Slack: the
// connections keep taking envelopes until the refresh_requested that follows
// after the warning lead (WithWarningLead). DisconnectLinkDisabled also
// disables the link: see DisableLink.
func (s *Server) Disconnect(reason string) {
	if reason == "" {
		reason = DisconnectRefresh
	}
	warning := reason == DisconnectWarning
	s.mu.Lock()
	if reason == DisconnectLinkDisabled {
		s.linkOff = true
	}
	var targets []*conn
	for _, c := range s.conns {
		if !c.draining && !c.dropped {
			c.draining = !warning
			targets = append(targets, c)
		}
	}
	if warning && len(targets) > 0 && !s.closed {
		s.wg.Add(1)
		go s.refreshAfterWarning(targets)
	}
	s.mu.Unlock()
	frame := disconnectFrame(reason)
	for _, c := range targets {
		_ = c.write(frame)
	}
}

// refreshAfterWarning sends refresh_requested to the warned connections that
// are still open once the warning lead has passed.
func (s *Server) refreshAfterWarning(warned []*conn) {
	defer s.wg.Done()
	t := time.NewTimer(s.warnLead)
	defer t.Stop()
	select {
	case <-s.done:
		return
	case <-t.C:
	}
	s.mu.Lock()
	var targets []*conn
	for _, c := range warned {
		if !c.draining && !c.dropped && slices.Contains(s.conns, c) {
			c.draining = true
			targets = append(targets, c)
		}
	}
	s.mu.Unlock()
	frame := disconnectFrame(DisconnectRefresh)
	for _, c := range targets {
		_ = c.write(frame)
	}
}

// DisableLink turns Socket Mode off for the app, as an admin switching it off
// in the app's settings does: every open connection gets a link_disabled
// disconnect message, and so does every connection opened from now on, in
// place of hello. EnableLink turns it back on.
func (s *Server) DisableLink() { s.Disconnect(DisconnectLinkDisabled) }

// EnableLink turns Socket Mode back on after DisableLink.
func (s *Server) EnableLink() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.linkOff = false
}

// Refusals counts the connections answered with a disconnect message in
// place of hello (too_many_websockets, link_disabled).
func (s *Server) Refusals() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refusals
}

// DropConnections closes every connection abruptly, without a close frame, as a
// network failure would.
func (s *Server) DropConnections() {
	s.mu.Lock()
	var targets []*conn
	for _, c := range s.conns {
		if !c.dropped {
			c.dropped = true
			targets = append(targets, c)
		}
	}
	s.mu.Unlock()
	for _, c := range targets {
		_ = c.ws.NetConn().Close()
	}
}

// PausePings stops (true) or resumes (false) WebSocket pings on every
// connection, to test the client's ping timeout.
func (s *Server) PausePings(paused bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pingsPaused = paused
}

// SendEnvelope sends payload in an envelope of envType ("slash_commands",
// "interactive", "events_api") on the newest open connection and waits for its
// ack. retryAttempt > 0 marks the envelope as Slack's retry (retry_reason
// "timeout"). When ctx has no deadline it waits Slack's 3 seconds (WithAckTimeout).
func (s *Server) SendEnvelope(ctx context.Context, envType string, payload any, retryAttempt int) (Ack, error) {
	raw, err := json.Marshal(payload)
	if err != nil {
		return Ack{}, fmt.Errorf("slacktest: marshal %s payload: %w", envType, err)
	}
	return s.send(ctx, envType, raw, retryAttempt, "")
}

func (s *Server) send(ctx context.Context, envType string, payload json.RawMessage, retryAttempt int, responseURL string) (Ack, error) {
	ctx, cancel := withDefaultTimeout(ctx, s.ackTimeout)
	defer cancel()
	env := envelope{
		EnvelopeID:             newID(),
		Type:                   envType,
		AcceptsResponsePayload: envType == "slash_commands",
		RetryAttempt:           retryAttempt,
		Payload:                payload,
	}
	if retryAttempt > 0 {
		env.RetryReason = "timeout"
	}
	frame, err := json.Marshal(env)
	if err != nil {
		return Ack{}, fmt.Errorf("slacktest: marshal envelope: %w", err)
	}

	s.mu.Lock()
	var open []*conn
	for _, c := range slices.Backward(s.conns) {
		if !c.draining && !c.dropped {
			open = append(open, c)
		}
	}
	var target *conn
	if len(open) > 0 {
		target = open[0]
		if s.roundRobin {
			target = open[s.nextConn%len(open)]
			s.nextConn++
		}
	}
	if target == nil {
		s.mu.Unlock()
		return Ack{}, fmt.Errorf("send %s envelope: %w", envType, ErrNoConnection)
	}
	p := &pendingAck{sent: time.Now(), responseURL: responseURL, retry: retryAttempt, result: make(chan ackResult, 1)}
	s.pending[env.EnvelopeID] = p
	s.mu.Unlock()

	if err := target.write(frame); err != nil {
		s.abandon(env.EnvelopeID)
		return Ack{}, fmt.Errorf("slacktest: send %s envelope: %w", envType, err)
	}
	select {
	case r := <-p.result:
		return r.ack, r.err
	case <-ctx.Done():
	case <-s.done:
	}
	if !s.abandon(env.EnvelopeID) {
		// The ack arrived while we gave up; it is in the buffer.
		r := <-p.result
		return r.ack, r.err
	}
	if ctx.Err() == nil {
		return Ack{}, fmt.Errorf("slacktest: no ack for %s envelope %s: server closed", envType, env.EnvelopeID)
	}
	return Ack{}, fmt.Errorf("slacktest: no ack for %s envelope %s: %w", envType, env.EnvelopeID, ctx.Err())
}

// abandon stops waiting for an envelope's ack; false means the ack already came.
func (s *Server) abandon(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, waiting := s.pending[id]; !waiting {
		return false
	}
	delete(s.pending, id)
	s.acked[id] = envAbandoned
	return true
}
