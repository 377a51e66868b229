package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/config"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/ops"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
)

// httpGet fetches path from the running bot's ops server.
func (h *harness) httpGet(path string) (int, string) {
	h.t.Helper()
	return getURL(h.t, "http://"+h.main.HTTP.Addr()+path)
}

func getURL(t testing.TB, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}

// waitStatus polls path until it answers want, failing after a generous deadline.
func (h *harness) waitStatus(path string, want int) string {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		status, body := h.httpGet(path)
		if status == want {
			return body
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("GET %s: still %d (%q), want %d\nlogs:\n%s", path, status, body, want, h.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// metricLine matches one sample line of name whose labels contain every label.
func metricLine(body, name string, labels ...string) (string, bool) {
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if ok {
			return line, true
		}
	}
	return "", false
}

var nonZeroSample = regexp.MustCompile(` [1-9][0-9]*(\.[0-9]+)?(e[+-]?[0-9]+)?$`)

// A connected bot is alive and ready; after a slash command /metrics shows
// the command, the GeminiDB call it made and the ack.
func TestOpsEndpointsWhenConnected(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	if status, body := h.httpGet("/healthz"); status != http.StatusOK {
		t.Errorf("/healthz: got %d (%q), want 200", status, body)
	}
	body := h.waitStatus("/readyz", http.StatusOK)
	for _, want := range []string{"slack: ok", "store: ok"} {
		if !strings.Contains(body, want) {
			t.Errorf("/readyz: got %q, want it to contain %q", body, want)
		}
	}

	in := h.addInstances("cass", "cassandra", 1)[0]
	h.plan(alice, in.Name)

	status, metrics := h.httpGet("/metrics")
	if status != http.StatusOK {
		t.Fatalf("/metrics: got %d, want 200", status)
	}
	wants := []struct {
		name   string
		labels []string
	}{
		{"geminidb_patch_commands_total", []string{`outcome="planned"`}},
		{"geminidb_patch_api_latency_seconds_count", []string{`call="list_instances"`, `result="ok"`}},
		{"geminidb_patch_ack_latency_seconds_count", nil},
	}
	for _, w := range wants {
		line, ok := metricLine(metrics, w.name, w.labels...)
		if !ok {
			t.Errorf("/metrics has no %s%v:\n%s", w.name, w.labels, metrics)
			continue
		}
		if !nonZeroSample.MatchString(line) {
			t.Errorf("got %q, want a count above 0", line)
		}
	}
	// The other metrics exist before anything happened to them.
	for _, name := range []string{"geminidb_patch_socket_reconnects_total", "go_goroutines", "process_open_fds"} {
		if _, ok := metricLine(metrics, name); !ok {
			t.Errorf("/metrics has no %s", name)
		}
	}
}

// While the Socket Mode connection is down the bot is alive but not ready;
// once it reconnects it is ready again.
func TestReadyzWhenSocketDown(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.waitStatus("/readyz", http.StatusOK)

	// Slack refuses new connections (with an error the client retries) and
	// the live one breaks.
	h.slack.FailMethod("apps.connections.open", "internal_error", -1)
	h.slack.DropConnections()
	body := h.waitStatus("/readyz", http.StatusServiceUnavailable)
	if !strings.Contains(body, "slack: not ready") || !strings.Contains(body, "store: ok") {
		t.Errorf("/readyz: got %q, want slack not ready and store ok", body)
	}
	if status, _ := h.httpGet("/healthz"); status != http.StatusOK {
		t.Errorf("/healthz while disconnected: got %d, want 200", status)
	}

	before := h.slack.Connections()
	h.slack.FailMethod("apps.connections.open", "", 0)
	if err := h.slack.WaitConnections(h.ctx(), before+1); err != nil {
		t.Fatalf("the bot did not reconnect: %v\nlogs:\n%s", err, h.logs.String())
	}
	h.waitStatus("/readyz", http.StatusOK)
	_, metrics := h.httpGet("/metrics")
	if line, ok := metricLine(metrics, "geminidb_patch_socket_reconnects_total"); !ok || !nonZeroSample.MatchString(line) {
		t.Errorf("reconnects metric = %q, want a count above 0 after a reconnect", line)
	}
}

// While the bot shuts down /readyz says so.
func TestReadyzDuringShutdown(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.waitStatus("/readyz", http.StatusOK)
	h.main.stopping.Store(true)
	body := h.waitStatus("/readyz", http.StatusServiceUnavailable)
	if !strings.Contains(body, "shutdown: not ready: shutting down") {
		t.Errorf("/readyz: got %q, want it to say the bot is shutting down", body)
	}
}

// The store check is the real store's Ping: a closed store is not ready.
func TestReadyzStoreClosed(t *testing.T) {
	t.Parallel()
	st, err := store.Open(filepath.Join(t.TempDir(), "bot.db"))
	if err != nil {
		t.Fatal(err)
	}
	h := ops.Handler(map[string]ops.Check{"store": st.Ping, "slack": func(context.Context) error { return nil }}, prometheus.NewRegistry())
	ready := func() (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		return rec.Code, rec.Body.String()
	}
	if code, body := ready(); code != http.StatusOK {
		t.Errorf("open store: got %d (%q), want 200", code, body)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	code, body := ready()
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "store: not ready") {
		t.Errorf("closed store: got %d (%q), want 503 naming the store", code, body)
	}
}

// NewMain binds the port; Close without Run releases it and the store.
func TestCloseWithoutRun(t *testing.T) {
	dir := t.TempDir()
	cfg := validConfig()
	cfg.Store = filepath.Join(dir, "bot.db")
	cfg.HTTPAddr = "127.0.0.1:0"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	m, err := NewMain(cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	addr := m.HTTP.Addr()
	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	srv, err := ops.Listen(addr, http.NotFoundHandler())
	if err != nil {
		t.Errorf("the HTTP port is still held after Close: %v", err)
	} else {
		_ = srv.Shutdown(context.Background())
	}
	st, err := store.Open(cfg.Store)
	if err != nil {
		t.Fatalf("the store is still held after Close: %v", err)
	}
	_ = st.Close()
}

// The healthcheck subcommand (Docker's HEALTHCHECK) asks /healthz.
func TestHealthcheckSubcommand(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	var stdout, stderr strings.Builder
	if code := run(context.Background(), []string{"healthcheck"}, environ{lookup: config.MapLookup(map[string]string{"BOT_HTTP_ADDR": h.main.HTTP.Addr()})}, &stdout, &stderr); code != exitOK {
		t.Errorf("healthcheck against a running bot: got %d (%s), want 0", code, stderr.String())
	}
	// Nothing listens on a port just released.
	srv, err := ops.Listen("127.0.0.1:0", http.NotFoundHandler())
	if err != nil {
		t.Fatal(err)
	}
	free := srv.Addr()
	_ = srv.Shutdown(context.Background())
	if code := run(context.Background(), []string{"healthcheck"}, environ{lookup: config.MapLookup(map[string]string{"BOT_HTTP_ADDR": free})}, &stdout, &stderr); code != exitFailed {
		t.Errorf("healthcheck with nothing listening: got %d, want %d", code, exitFailed)
	}
}

// The profiler is not served unless BOT_PPROF asks for it; then the ops
// listener serves its index and a goroutine profile of the running bot.
func TestPprofEndpoint(t *testing.T) {
	t.Run("off by default", func(t *testing.T) {
		h := newHarness(t, nil)
		if status, _ := h.httpGet("/debug/pprof/"); status != http.StatusNotFound {
			t.Errorf("/debug/pprof/ with BOT_PPROF unset: got %d, want 404", status)
		}
	})
	t.Run("on", func(t *testing.T) {
		h := newHarness(t, func(c *config.Config) { c.Pprof = true })
		status, body := h.httpGet("/debug/pprof/")
		if status != http.StatusOK || !strings.Contains(body, "goroutine") {
			t.Errorf("/debug/pprof/ with BOT_PPROF=true: got %d %.200q, want 200 and the profile index", status, body)
		}
		// The bot's own goroutines are in the profile: it is this process's.
		status, body = h.httpGet("/debug/pprof/goroutine?debug=1")
		if status != http.StatusOK || !strings.Contains(body, "geminidb-patch-bot/bot.") {
			t.Errorf("goroutine profile: got %d %.300q, want 200 naming the bot's goroutines", status, body)
		}
		if !strings.Contains(h.logs.String(), "/debug/pprof/") {
			t.Error("the start-up log does not say the profiler is served")
		}
	})
}

// The Slack Web API client keeps its connections (upgrade.NewTransport's
// pool, not http.DefaultTransport's 2 idle per host): over four waves of 20
// plans posted at once, a pool opens at most as many connections as were
// ever in use at once (20, plus a few for other calls), where
// http.DefaultTransport keeps 2 and opens most of every wave anew (about 50).
func TestSlackClientReusesConnections(t *testing.T) {
	h := newHarness(t, func(c *config.Config) {
		c.AllowedUsers = []string{"*"}
		c.LogLevel = "info"
	})
	in := h.addInstances("db", "cassandra", 1)[0]
	before := h.slack.HTTPConnections()
	for n := range 4 {
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Go(func() { h.plan(fmt.Sprintf("U%03d%02d", n, i), in.Name) })
		}
		wg.Wait()
	}
	if opened := h.slack.HTTPConnections() - before; opened > 24 {
		t.Errorf("4 waves of 20 plans opened %d connections to Slack, want at most 24 (a pool keeps them)", opened)
	}
}
