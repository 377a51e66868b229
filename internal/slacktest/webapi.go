package slacktest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// maxBody caps request bodies; Slack's own limits are far below it.
const maxBody = 10 << 20

// reply is a Web API answer: an HTTP status and a JSON body.
type reply struct {
	status     int
	body       map[string]any
	retryAfter time.Duration
}

func ok(fields map[string]any) reply {
	body := map[string]any{"ok": true}
	for k, v := range fields {
		body[k] = v
	}
	return reply{status: http.StatusOK, body: body}
}

func slackErr(code string, details ...string) reply {
	body := map[string]any{"ok": false, "error": code}
	if len(details) > 0 {
		body["response_metadata"] = map[string]any{"messages": details}
	}
	return reply{status: http.StatusOK, body: body}
}

func (r reply) errorCode() string {
	if code, _ := r.body["error"].(string); code != "" && r.body["ok"] != true {
		return code
	}
	return ""
}

func (r reply) write(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	if r.status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(r.retryAfter.Seconds())))))
	}
	w.WriteHeader(r.status)
	_ = json.NewEncoder(w).Encode(r.body)
}

// serveAPI answers the Web API methods under /api/.
func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	method := r.PathValue("method")
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	form, token, perr := parseParams(r, body)
	call := Call{
		Method:   method,
		Channel:  form.Get("channel"),
		ThreadTS: form.Get("thread_ts"),
		Text:     form.Get("text"),
		User:     form.Get("user"),
		Form:     form,
		Body:     body,
		URL:      r.URL.String(),
	}
	if b := form.Get("blocks"); b != "" {
		call.Blocks = json.RawMessage(b)
	}

	s.mu.Lock()
	var rep reply
	if perr != "" {
		rep = slackErr(perr)
	} else {
		rep = s.handleLocked(method, token, form, &call)
	}
	call.Status, call.Error = rep.status, rep.errorCode()
	call.At = time.Now()
	s.calls = append(s.calls, call)
	s.notifyLocked()
	scopes := s.scopeHeader()
	s.mu.Unlock()

	if token != "" && token == s.botToken {
		// Slack reports a token's scopes on every Web API answer (auth.test
		// included), as an empty header when it has none.
		w.Header().Set("X-OAuth-Scopes", scopes)
	}
	rep.write(w)
}

// parseParams reads a request's parameters from a form or a JSON body, and its
// token from the Authorization header or the token parameter. A non-empty third
// result is the Slack error for an unreadable body.
func parseParams(r *http.Request, body []byte) (url.Values, string, string) {
	form := url.Values{}
	for k, v := range r.URL.Query() {
		form[k] = v
	}
	ctype, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch {
	case ctype == "application/json":
		if len(bytes.TrimSpace(body)) > 0 {
			var fields map[string]json.RawMessage
			if err := json.Unmarshal(body, &fields); err != nil {
				return form, "", "invalid_json"
			}
			for k, raw := range fields {
				var str string
				if json.Unmarshal(raw, &str) == nil {
					form.Set(k, str)
				} else if string(raw) != "null" {
					form.Set(k, string(raw))
				}
			}
		}
	case len(body) > 0:
		vals, err := url.ParseQuery(string(body))
		if err != nil {
			return form, "", "invalid_form_data"
		}
		for k, v := range vals {
			form[k] = v
		}
	}
	token := form.Get("token")
	form.Del("token")
	if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") {
		token = strings.TrimPrefix(h, "Bearer ")
	}
	return form, token, ""
}

// handleLocked answers one Web API call and applies its effect.
func (s *Server) handleLocked(method, token string, form url.Values, call *Call) reply {
	wantToken := s.botToken
	if method == "apps.connections.open" {
		wantToken = s.appToken
	}
	switch {
	case token == "":
		return slackErr("not_authed")
	case method == "apps.connections.open" && token == s.botToken,
		method != "apps.connections.open" && token == s.appToken:
		return slackErr("not_allowed_token_type")
	case token != wantToken:
		return slackErr("invalid_auth")
	}
	if l := s.limits[method]; l != nil {
		if l.left > 0 {
			if l.left--; l.left == 0 {
				delete(s.limits, method)
			}
		}
		return reply{status: http.StatusTooManyRequests, body: map[string]any{"ok": false, "error": "ratelimited"}, retryAfter: l.retryAfter}
	}
	if f := s.fails[method]; f != nil {
		if f.left > 0 {
			if f.left--; f.left == 0 {
				delete(s.fails, method)
			}
		}
		return slackErr(f.code)
	}
	if allowed, wait := s.throttleLocked(method, form.Get("channel")); !allowed {
		return reply{status: http.StatusTooManyRequests, body: map[string]any{"ok": false, "error": "ratelimited"}, retryAfter: wait}
	}

	switch method {
	case "auth.test":
		return ok(map[string]any{
			"url": "https://" + TeamDomain + ".slack.com/", "team": "Fake Workspace", "user": "bot",
			"team_id": TeamID, "user_id": BotUserID, "bot_id": BotID, "is_enterprise_install": false,
		})
	case "apps.connections.open":
		if s.revoked {
			return slackErr("invalid_auth")
		}
		s.nextTicket++
		ticket := strconv.Itoa(s.nextTicket)
		s.tickets[ticket] = true
		return ok(map[string]any{"url": "ws" + strings.TrimPrefix(s.http.URL, "http") + "/link/?ticket=" + ticket})
	case "chat.postMessage":
		return s.postMessageLocked(form, call)
	case "chat.postEphemeral":
		return s.postEphemeralLocked(form, call)
	case "chat.update":
		return s.updateLocked(form, call)
	case "chat.delete":
		return s.deleteLocked(form, call)
	case "usergroups.users.list":
		members, found := s.groups[form.Get("usergroup")]
		if !found {
			return slackErr("no_such_subteam")
		}
		return ok(map[string]any{"users": slices.Clone(members)})
	case "users.info":
		return s.userInfoLocked(form.Get("user"))
	case "chat.getPermalink":
		return s.permalinkLocked(form, call)
	case "views.publish":
		return s.publishLocked(form, call)
	case "users.conversations":
		return s.usersConversationsLocked(form)
	}
	return slackErr("unknown_method")
}

func (s *Server) postMessageLocked(form url.Values, call *Call) reply {
	channel := form.Get("channel")
	if channel == "" {
		return slackErr("channel_not_found")
	}
	if code := s.postAccessLocked(channel); code != "" {
		return slackErr(code)
	}
	if rep, bad := s.checkPostLocked(form); bad {
		return rep
	}
	m := &Message{Channel: channel, ThreadTS: form.Get("thread_ts"), User: BotUserID, Text: form.Get("text")}
	if b := form.Get("blocks"); b != "" {
		m.Blocks = json.RawMessage(b)
	}
	s.addMessageLocked(m)
	call.TS = m.TS
	return ok(map[string]any{"channel": channel, "ts": m.TS, "message": messageJSON(m)})
}

func (s *Server) postEphemeralLocked(form url.Values, call *Call) reply {
	channel, user := form.Get("channel"), form.Get("user")
	if channel == "" {
		return slackErr("channel_not_found")
	}
	if code := s.postAccessLocked(channel); code != "" {
		return slackErr(code)
	}
	if user == "" || !s.isMemberLocked(channel, user) {
		return slackErr("user_not_in_channel")
	}
	if rep, bad := s.checkPostLocked(form); bad {
		return rep
	}
	call.TS = s.newTSLocked()
	return ok(map[string]any{"message_ts": call.TS})
}

func (s *Server) updateLocked(form url.Values, call *Call) reply {
	m, fail := s.messageLocked(form, "ts", call)
	if m == nil {
		return fail
	}
	if s.accessLocked(m.Channel) == accessHidden {
		return slackErr("channel_not_found")
	}
	_, hasText := form["text"]
	_, hasBlocks := form["blocks"]
	if !hasText && !hasBlocks && form.Get("attachments") == "" {
		return slackErr("no_text")
	}
	if code, details := s.checkMessageLocked(form.Get("text"), form.Get("blocks")); code != "" {
		return slackErr(code, details...)
	}
	// Like Slack, keep what the update leaves out.
	if hasText {
		m.Text = form.Get("text")
	}
	if hasBlocks {
		m.Blocks = json.RawMessage(form.Get("blocks"))
	}
	m.Updates++
	return ok(map[string]any{"channel": form.Get("channel"), "ts": call.TS, "text": m.Text, "message": messageJSON(m)})
}

func (s *Server) deleteLocked(form url.Values, call *Call) reply {
	channel, ts := form.Get("channel"), form.Get("ts")
	call.TS = ts
	if !s.removeLocked(channel, ts) {
		return slackErr("message_not_found")
	}
	return ok(map[string]any{"channel": channel, "ts": ts})
}

func (s *Server) userInfoLocked(id string) reply {
	u, found := s.users[id]
	if !found {
		if !strings.HasPrefix(id, "U") && !strings.HasPrefix(id, "W") {
			return slackErr("user_not_found")
		}
		u = User{ID: id, Name: strings.ToLower(id), RealName: "User " + id, IsBot: id == BotUserID}
	}
	return ok(map[string]any{"user": map[string]any{
		"id": u.ID, "team_id": TeamID, "name": u.Name, "real_name": u.RealName,
		"deleted": u.Deleted, "is_bot": u.IsBot, "is_admin": false,
		"profile": map[string]any{"real_name": u.RealName, "display_name": u.Name},
	}})
}

// checkPostLocked applies the checks chat.postMessage and chat.postEphemeral share.
func (s *Server) checkPostLocked(form url.Values) (reply, bool) {
	text, blocks := form.Get("text"), form.Get("blocks")
	if text == "" && (blocks == "" || blocks == "[]") && form.Get("attachments") == "" {
		return slackErr("no_text"), true
	}
	if code, details := s.checkMessageLocked(text, blocks); code != "" {
		return slackErr(code, details...), true
	}
	return reply{}, false
}

// checkMessageLocked enforces Slack's message limits; it returns the error
// code and Slack-style details for the first violation, or "".
func (s *Server) checkMessageLocked(text, blocks string) (string, []string) {
	if n := runeCount(text); n > maxTextLen {
		return "msg_too_long", []string{fmt.Sprintf("[ERROR] text is %d characters; Slack allows %d", n, maxTextLen)}
	}
	if blocks == "" {
		return "", nil
	}
	var bad *BlocksError
	if errors.As(ValidateBlocks(json.RawMessage(blocks)), &bad) {
		return bad.Code, bad.Details
	}
	if s.rules.BlockText > 0 && BlocksTextLen(json.RawMessage(blocks)) > s.rules.BlockText {
		// Slack gives no details for this one.
		return "msg_blocks_too_long", nil
	}
	return "", nil
}

// newTSLocked returns a unique message timestamp, increasing with every call.
func (s *Server) newTSLocked() string {
	s.nextTS++
	micros := s.nextTS * 100
	return fmt.Sprintf("%d.%06d", 1700000000+micros/1_000_000, micros%1_000_000)
}

// addMessageLocked gives m a ts and stores it in its channel.
func (s *Server) addMessageLocked(m *Message) {
	m.TS = s.newTSLocked()
	if m.ThreadTS != "" && s.findLocked(m.Channel, m.ThreadTS) == nil {
		s.violationLocked("message %s in %s replies to thread_ts %s, which is not a message in that channel", m.TS, m.Channel, m.ThreadTS)
	}
	s.messages[m.Channel] = append(s.messages[m.Channel], m)
}

func (s *Server) findLocked(channel, ts string) *Message {
	for _, m := range s.messages[channel] {
		if m.TS == ts {
			return m
		}
	}
	return nil
}

func (s *Server) removeLocked(channel, ts string) bool {
	msgs := s.messages[channel]
	i := slices.IndexFunc(msgs, func(m *Message) bool { return m.TS == ts })
	if i < 0 {
		return false
	}
	s.messages[channel] = slices.Delete(msgs, i, i+1)
	return true
}

// messageJSON is a message as the Web API returns it.
func messageJSON(m *Message) map[string]any {
	out := map[string]any{"type": "message", "user": m.User, "text": m.Text, "ts": m.TS, "team": TeamID}
	if m.User == BotUserID {
		out["bot_id"] = BotID
		out["app_id"] = AppID
	}
	if m.ThreadTS != "" {
		out["thread_ts"] = m.ThreadTS
	}
	if len(m.Blocks) > 0 {
		out["blocks"] = m.Blocks
	}
	return out
}

// responsePayload is what a response URL accepts.
type responsePayload struct {
	Text            string          `json:"text"`
	Blocks          json.RawMessage `json:"blocks"`
	ResponseType    string          `json:"response_type"`
	ReplaceOriginal bool            `json:"replace_original"`
	DeleteOriginal  bool            `json:"delete_original"`
	ThreadTS        string          `json:"thread_ts"`
}

// maxResponseURLUses is how many times Slack lets an app post to one response URL.
const maxResponseURLUses = 5

// serveResponseURL answers posts to minted response URLs.
func (s *Server) serveResponseURL(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	full := s.http.URL + r.URL.Path
	call := Call{Method: "response_url", Body: body, URL: full}
	var p responsePayload
	jsonErr := json.Unmarshal(body, &p)
	if string(p.Blocks) == "null" {
		p.Blocks = nil
	}
	call.Text, call.Blocks, call.ThreadTS = p.Text, p.Blocks, p.ThreadTS
	call.ResponseType, call.ReplaceOriginal, call.DeleteOriginal = p.ResponseType, p.ReplaceOriginal, p.DeleteOriginal
	call.Form = url.Values{"text": {p.Text}, "response_type": {p.ResponseType}}

	s.mu.Lock()
	rep := s.respondLocked(full, p, jsonErr, &call)
	call.Status, call.Error = rep.status, rep.errorCode()
	call.At = time.Now()
	s.calls = append(s.calls, call)
	s.notifyLocked()
	s.mu.Unlock()

	rep.write(w)
}

func (s *Server) respondLocked(full string, p responsePayload, jsonErr error, call *Call) reply {
	ru := s.respURLs[full]
	if ru == nil {
		return reply{status: http.StatusNotFound, body: map[string]any{"ok": false, "error": "expired_url"}}
	}
	call.Channel = ru.channel
	if ttl := s.rules.ResponseURLTTL; ttl > 0 && s.now().Sub(ru.minted) > ttl {
		return reply{status: http.StatusNotFound, body: map[string]any{"ok": false, "error": "expired_url"}}
	}
	if ru.uses++; ru.uses > maxResponseURLUses {
		return reply{status: http.StatusNotFound, body: map[string]any{"ok": false, "error": "used_url"}}
	}
	bad := func(code string, details ...string) reply {
		rep := slackErr(code, details...)
		rep.status = http.StatusBadRequest
		return rep
	}
	if jsonErr != nil {
		return bad("invalid_payload")
	}
	if p.DeleteOriginal {
		if ru.original != "" {
			call.TS = ru.original
			s.removeLocked(ru.channel, ru.original)
		}
		return ok(nil)
	}
	if p.Text == "" && len(p.Blocks) == 0 {
		return bad("no_text")
	}
	if code, details := s.checkMessageLocked(p.Text, string(p.Blocks)); code != "" {
		return bad(code, details...)
	}
	switch {
	case p.ReplaceOriginal:
		if m := s.findLocked(ru.channel, ru.original); m != nil {
			call.TS = m.TS
			m.Text, m.Blocks = p.Text, p.Blocks
			m.Updates++
		}
	case p.ResponseType == "in_channel" && ru.channel != "":
		m := &Message{Channel: ru.channel, ThreadTS: p.ThreadTS, User: BotUserID, Text: p.Text, Blocks: p.Blocks}
		s.addMessageLocked(m)
		call.TS = m.TS
	}
	return ok(nil)
}

// permalinkLocked answers chat.getPermalink for a message the Server knows.
func (s *Server) permalinkLocked(form url.Values, call *Call) reply {
	m, fail := s.messageLocked(form, "message_ts", call)
	if m == nil {
		return fail
	}
	channel := form.Get("channel")
	link := Permalink(channel, m)
	if s.permalinkBase != "" {
		link = s.permalinkBase + strings.TrimPrefix(link, "https://"+TeamDomain+".slack.com")
	}
	return ok(map[string]any{"channel": channel, "permalink": link})
}

// messageLocked finds the message a call names by its channel and the ts
// in field tsField, recording the ts on call; when there is none it
// returns the error Slack would answer.
func (s *Server) messageLocked(form url.Values, tsField string, call *Call) (*Message, reply) {
	channel, ts := form.Get("channel"), form.Get(tsField)
	call.TS = ts
	if channel == "" {
		return nil, slackErr("channel_not_found")
	}
	m := s.findLocked(channel, ts)
	if m == nil {
		return nil, slackErr("message_not_found")
	}
	return m, reply{}
}

// Permalink is the permalink chat.getPermalink answers for a message: the
// shape of Slack's, "https://fake.slack.com/archives/C123/p1700000000000100",
// with thread_ts for a thread reply.
func Permalink(channel string, m *Message) string {
	link := "https://" + TeamDomain + ".slack.com/archives/" + channel + "/p" + strings.ReplaceAll(m.TS, ".", "")
	if m.ThreadTS != "" && m.ThreadTS != m.TS {
		link += "?thread_ts=" + m.ThreadTS + "&cid=" + channel
	}
	return link
}
