package demo

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
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
	w   *World
	mux *http.ServeMux
}

func newHandler(w *World) http.Handler {
	h := &handler{w: w, mux: http.NewServeMux()}
	h.mux.HandleFunc("GET /{$}", h.page)
	h.mux.HandleFunc("GET /api/meta", h.meta)
	h.mux.HandleFunc("GET /api/state", h.state)
	h.mux.HandleFunc("POST /api/command", h.command)
	h.mux.HandleFunc("POST /api/click", h.click)
	h.mux.HandleFunc("POST /api/approvals", h.approvals)
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Only the page itself may post: another site open in the same browser
	// must not drive the demo.
	if r.Method == http.MethodPost {
		if origin := r.Header.Get("Origin"); origin != "" {
			if u, err := url.Parse(origin); err != nil || u.Host != r.Host {
				http.Error(w, "cross-origin requests are not allowed", http.StatusForbidden)
				return
			}
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
	})
}

// stateView is what /api/state answers.
type stateView struct {
	Version    int           `json:"version"`
	User       string        `json:"user"`
	Approvals  bool          `json:"approvals"`
	Restarting bool          `json:"restarting"`
	Timeline   []ViewMessage `json:"timeline"`
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
	writeJSON(w, http.StatusOK, stateView{
		Version: version, User: user, Approvals: on, Restarting: restarting,
		Timeline: h.w.Conv.View(user).Timeline,
	})
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
