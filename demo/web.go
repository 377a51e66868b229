package demo

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/slacktest"
)

// page is the demo's single page: HTML, CSS and JavaScript in one file,
// no build step.
//
//go:embed page.html
var page []byte

// longPoll is how long /api/state waits for a change before answering
// with the same state.
const longPoll = 15 * time.Second

// handler serves the page and its JSON API:
//
//	GET  /                          the page
//	GET  /api/meta                  people, channel, emoji, the bot
//	GET  /api/state?user=U&since=N  what user sees; waits while the version is N
//	POST /api/command   {"user","text"}
//	POST /api/click     {"user","target":{"eph"|"ts"},"action_id","value"}
//	POST /api/approvals {"on"}      restart the bot with or without BOT_APPROVERS
type handler struct {
	w     *World
	mux   *http.ServeMux
	hosts map[string]bool // the Host headers the page answers
}

// newHandler serves the World's page on port: only to requests whose Host
// names this machine's loopback with that port (see allowedHosts).
func newHandler(w *World, port string, extraHosts ...string) http.Handler {
	h := &handler{w: w, mux: http.NewServeMux(), hosts: allowedHosts(port, extraHosts...)}
	h.mux.HandleFunc("GET /{$}", h.page)
	h.mux.HandleFunc("GET /archives/{channel}/{message}", h.permalink)
	h.mux.HandleFunc("GET /api/meta", h.meta)
	h.mux.HandleFunc("GET /api/state", h.state)
	h.mux.HandleFunc("POST /api/command", h.command)
	h.mux.HandleFunc("POST /api/click", h.click)
	h.mux.HandleFunc("POST /api/home", h.home)
	h.mux.HandleFunc("POST /api/approvals", h.approvals)
	return h
}

// allowedHosts are the Host headers the page answers: 127.0.0.1, localhost
// and [::1] with the serving port, and any extra host:port (the address
// --addr names, when it is an IP literal beyond loopback: an IP literal
// cannot be rebound, a name can).
func allowedHosts(port string, extra ...string) map[string]bool {
	hosts := map[string]bool{}
	for _, h := range []string{"127.0.0.1", "localhost", "::1"} {
		hosts[net.JoinHostPort(h, port)] = true
	}
	for _, h := range extra {
		hosts[strings.ToLower(h)] = true
	}
	return hosts
}

// ServeHTTP refuses, on every route, what a DNS-rebinding or cross-site
// attack sends: a page of another site that resolves its own name to
// 127.0.0.1 reaches this server with its name in Host (421), and a page of
// another origin that posts here sends its Origin (403).
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.hosts[strings.ToLower(r.Host)] {
		http.Error(w, "this demo page answers only http://127.0.0.1, http://localhost or http://[::1] on its port", http.StatusMisdirectedRequest)
		return
	}
	if origin := r.Header.Get("Origin"); origin != "" {
		if u, err := url.Parse(origin); err != nil || u.Scheme != "http" || !strings.EqualFold(u.Host, r.Host) {
			http.Error(w, "cross-origin requests are not allowed", http.StatusForbidden)
			return
		}
	}
	h.mux.ServeHTTP(w, r)
}

func (h *handler) page(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(page)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (h *handler) meta(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"channel": Channel,
		"people":  People,
		"bot":     map[string]string{"id": slacktest.BotUserID, "name": BotName},
		"command": Command,
		"emoji":   Emoji,
		"speed":   h.w.opts.speed,
	})
}

// stateView is what /api/state answers.
type stateView struct {
	Version    int    `json:"version"`
	User       string `json:"user"`
	Approvals  bool   `json:"approvals"`
	Restarting bool   `json:"restarting"`
	// Now is the demo's clock (the bot's and the cloud's), which --speed
	// runs fast: the page shows it, to watch a maintenance window open.
	Now      time.Time     `json:"now"`
	Timeline []ViewMessage `json:"timeline"`
	// Home is the blocks of the Home tab the bot last published for the
	// user (views.publish), absent when it published none.
	Home json.RawMessage `json:"home,omitempty"`
}

func (h *handler) state(w http.ResponseWriter, r *http.Request) {
	user := r.URL.Query().Get("user")
	if !knownPerson(user) {
		http.Error(w, "unknown user", http.StatusBadRequest)
		return
	}
	if since, err := strconv.Atoi(r.URL.Query().Get("since")); err == nil {
		ctx, cancel := context.WithTimeout(r.Context(), longPoll)
		defer cancel()
		// A timeout or a closed page just ends the wait.
		_ = h.w.Slack.WaitFor(ctx, "a change", func(*slacktest.Server) bool { return h.w.Conv.Version() != since })
	}
	version := h.w.Conv.Version()
	on, restarting := h.w.Approvals()
	view := stateView{
		Version: version, User: user, Approvals: on, Restarting: restarting, Now: h.w.opts.now().UTC(),
		Timeline: h.w.Conv.View(user).Timeline,
	}
	if home, ok := h.w.Slack.HomeView(user); ok {
		view.Home = home.Blocks
	}
	writeJSON(w, http.StatusOK, view)
}

func knownPerson(id string) bool {
	for _, p := range People {
		if p.ID == id {
			return true
		}
	}
	return false
}

// decode reads a small JSON body into v.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		http.Error(w, "bad request body: "+err.Error(), http.StatusBadRequest)
		return false
	}
	return true
}

func (h *handler) command(w http.ResponseWriter, r *http.Request) {
	var req struct {
		User string `json:"user"`
		Text string `json:"text"`
	}
	if !decode(w, r, &req) {
		return
	}
	if !knownPerson(req.User) {
		http.Error(w, "unknown user", http.StatusBadRequest)
		return
	}
	if err := h.w.Conv.Command(r.Context(), req.User, req.Text); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

func (h *handler) click(w http.ResponseWriter, r *http.Request) {
	var req struct {
		User     string `json:"user"`
		Target   Target `json:"target"`
		ActionID string `json:"action_id"`
		Value    string `json:"value"`
	}
	if !decode(w, r, &req) {
		return
	}
	if !knownPerson(req.User) {
		http.Error(w, "unknown user", http.StatusBadRequest)
		return
	}
	err := h.w.Conv.Click(r.Context(), req.User, req.Target, req.ActionID, req.Value)
	switch {
	case errors.Is(err, ErrNoButton):
		http.Error(w, err.Error(), http.StatusConflict)
	case err != nil:
		http.Error(w, err.Error(), http.StatusInternalServerError)
	default:
		writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
	}
}

// home opens the app's Home tab as user: Slack sends the bot
// app_home_opened, and the bot publishes the tab with views.publish (which
// /api/state then shows).
func (h *handler) home(w http.ResponseWriter, r *http.Request) {
	var req struct {
		User string `json:"user"`
	}
	if !decode(w, r, &req) {
		return
	}
	if !knownPerson(req.User) {
		http.Error(w, "unknown user", http.StatusBadRequest)
		return
	}
	if _, err := h.w.Slack.AppHomeOpened(r.Context(), req.User, "home"); err != nil {
		http.Error(w, slackFailure(err), http.StatusBadGateway)
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

// permalinkPath is a message's path in the demo's permalinks, as Slack's:
// /archives/C0DBOPS01/p1700000000000100.
var permalinkPath = regexp.MustCompile(`^p([0-9]{10})([0-9]{6})$`)

// permalink opens a permalink the bot posted (history's and other
// messages' links, from chat.getPermalink) on the page: the message's
// thread, or the thread the reply is in.
func (h *handler) permalink(w http.ResponseWriter, r *http.Request) {
	m := permalinkPath.FindStringSubmatch(r.PathValue("message"))
	if m == nil || r.PathValue("channel") != Channel.ID {
		http.NotFound(w, r)
		return
	}
	thread := m[1] + "." + m[2]
	if ts := r.URL.Query().Get("thread_ts"); slackTS.MatchString(ts) {
		thread = ts
	}
	http.Redirect(w, r, "/#thread="+thread, http.StatusFound)
}

// slackTS is a message timestamp, as "1700000000.000100".
var slackTS = regexp.MustCompile(`^[0-9]{10}\.[0-9]{6}$`)

func (h *handler) approvals(w http.ResponseWriter, r *http.Request) {
	var req struct {
		On bool `json:"on"`
	}
	if !decode(w, r, &req) {
		return
	}
	// The restart outlives a closed page.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 30*time.Second)
	defer cancel()
	if err := h.w.SetApprovals(ctx, req.On); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}
