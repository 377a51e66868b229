package ops_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/ops"
)

func get(t *testing.T, h http.Handler, method, path string) (int, string, http.Header) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body), rec.Result().Header
}

func TestEndpointsByState(t *testing.T) {
	t.Parallel()
	ok := func(context.Context) error { return nil }
	down := func(context.Context) error { return errors.New("socket mode not connected") }
	tests := []struct {
		name       string
		checks     map[string]ops.Check
		path       string
		wantStatus int
		wantBody   []string
	}{
		{name: "healthz with every check failing", checks: map[string]ops.Check{"slack": down}, path: "/healthz", wantStatus: 200, wantBody: []string{"ok"}},
		{name: "readyz all ok", checks: map[string]ops.Check{"slack": ok, "store": ok}, path: "/readyz", wantStatus: 200, wantBody: []string{"slack: ok", "store: ok"}},
		{name: "readyz no checks", checks: nil, path: "/readyz", wantStatus: 200},
		{name: "readyz slack down", checks: map[string]ops.Check{"slack": down, "store": ok}, path: "/readyz", wantStatus: 503, wantBody: []string{"slack: not ready: socket mode not connected", "store: ok"}},
		{name: "readyz store down", checks: map[string]ops.Check{"slack": ok, "store": func(context.Context) error { return errors.New("database not open") }}, path: "/readyz", wantStatus: 503, wantBody: []string{"store: not ready: database not open"}},
		{name: "readyz with a warning", checks: map[string]ops.Check{"slack": ok, "replicas": func(context.Context) error { return ops.Warn(errors.New("mixed versions: v1, v2")) }}, path: "/readyz", wantStatus: 200, wantBody: []string{"replicas: ok (warning: mixed versions: v1, v2)", "slack: ok"}},
		{name: "unknown path", checks: nil, path: "/nope", wantStatus: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := ops.Handler(tt.checks, prometheus.NewRegistry())
			status, body, _ := get(t, h, http.MethodGet, tt.path)
			if status != tt.wantStatus {
				t.Errorf("GET %s: got status %d, want %d (body %q)", tt.path, status, tt.wantStatus, body)
			}
			for _, w := range tt.wantBody {
				if !strings.Contains(body, w) {
					t.Errorf("GET %s: got body %q, want it to contain %q", tt.path, body, w)
				}
			}
		})
	}
}

// A check is asked on every request: readiness follows the state.
func TestReadyzFollowsState(t *testing.T) {
	t.Parallel()
	var up atomic.Bool
	h := ops.Handler(map[string]ops.Check{"slack": func(context.Context) error {
		if !up.Load() {
			return errors.New("down")
		}
		return nil
	}}, prometheus.NewRegistry())
	for _, state := range []struct {
		up   bool
		want int
	}{{false, 503}, {true, 200}, {false, 503}} {
		up.Store(state.up)
		if got, body, _ := get(t, h, http.MethodGet, "/readyz"); got != state.want {
			t.Errorf("up=%v: got %d, want %d (%q)", state.up, got, state.want, body)
		}
	}
}

func TestMetricsIsPrometheusText(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "geminidb_patch_test_total", Help: "test"}, []string{"outcome"})
	reg.MustRegister(c)
	c.WithLabelValues("planned").Inc()
	h := ops.Handler(nil, reg)
	status, body, hdr := get(t, h, http.MethodGet, "/metrics")
	if status != 200 {
		t.Fatalf("got status %d, want 200", status)
	}
	if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("got Content-Type %q, want text/plain (Prometheus text format)", ct)
	}
	if want := `geminidb_patch_test_total{outcome="planned"} 1`; !strings.Contains(body, want) {
		t.Errorf("got body %q, want it to contain %q", body, want)
	}
}

func TestOnlyGet(t *testing.T) {
	t.Parallel()
	h := ops.Handler(nil, prometheus.NewRegistry())
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if status, _, _ := get(t, h, http.MethodPost, path); status != http.StatusMethodNotAllowed {
			t.Errorf("POST %s: got %d, want 405", path, status)
		}
	}
}

func TestServerServesAndShutsDown(t *testing.T) {
	t.Parallel()
	srv, err := ops.Listen("127.0.0.1:0", ops.Handler(nil, prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	res, err := http.Get("http://" + srv.Addr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Errorf("got %d, want 200", res.StatusCode)
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-done; err != nil {
		t.Errorf("Serve after Shutdown: got %v, want nil", err)
	}
	// A second Shutdown (Main.Close after Run) is harmless.
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
	if _, err := http.Get("http://" + srv.Addr() + "/healthz"); err == nil {
		t.Error("the server still answers after Shutdown")
	}
}

// Shutdown without Serve releases the port.
func TestShutdownWithoutServe(t *testing.T) {
	t.Parallel()
	srv, err := ops.Listen("127.0.0.1:0", ops.Handler(nil, prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	addr := srv.Addr()
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	again, err := ops.Listen(addr, ops.Handler(nil, prometheus.NewRegistry()))
	if err != nil {
		t.Fatalf("the port is still held after Shutdown: %v", err)
	}
	_ = again.Shutdown(context.Background())
}

// The profiler is off unless asked for, and then serves its index, named
// profiles and a CPU profile.
func TestPprof(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	tests := []struct {
		name       string
		opts       []ops.Option
		path       string
		wantStatus int
		wantBody   string
	}{
		{name: "off by default: index", path: "/debug/pprof/", wantStatus: 404},
		{name: "off by default: heap", path: "/debug/pprof/heap", wantStatus: 404},
		{name: "off by default: profile", path: "/debug/pprof/profile?seconds=1", wantStatus: 404},
		{name: "off when asked: index", opts: []ops.Option{ops.WithPprof(false)}, path: "/debug/pprof/", wantStatus: 404},
		{name: "on: index", opts: []ops.Option{ops.WithPprof(true)}, path: "/debug/pprof/", wantStatus: 200, wantBody: "goroutine"},
		{name: "on: goroutine profile", opts: []ops.Option{ops.WithPprof(true)}, path: "/debug/pprof/goroutine?debug=1", wantStatus: 200, wantBody: "goroutine profile:"},
		{name: "on: cmdline", opts: []ops.Option{ops.WithPprof(true)}, path: "/debug/pprof/cmdline", wantStatus: 200},
		{name: "on: metrics still served", opts: []ops.Option{ops.WithPprof(true)}, path: "/healthz", wantStatus: 200, wantBody: "ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			status, body, _ := get(t, ops.Handler(nil, reg, tt.opts...), http.MethodGet, tt.path)
			if status != tt.wantStatus {
				t.Errorf("GET %s: got status %d, want %d", tt.path, status, tt.wantStatus)
			}
			if !strings.Contains(body, tt.wantBody) {
				t.Errorf("GET %s: got body %.200q, want it to contain %q", tt.path, body, tt.wantBody)
			}
		})
	}
}
