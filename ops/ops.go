// Package ops serves the operational HTTP endpoints: /healthz (the process
// is alive), /readyz (every readiness check passes), /metrics (Prometheus
// text format) and, when asked for with WithPprof, Go's profiler under
// /debug/pprof/.
package ops

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is one readiness condition; nil means ready. ctx is the probe's
// request: it ends when the prober gives up. An error made by Warn keeps
// the process ready: /readyz shows it after "ok".
type Check func(ctx context.Context) error

// Warning is a readiness note that does not make the process unready, such
// as replicas of several versions during a rolling deploy.
type Warning struct{ Err error }

// Error returns the note.
func (w *Warning) Error() string { return w.Err.Error() }

// Unwrap returns the note's error.
func (w *Warning) Unwrap() error { return w.Err }

// Warn makes err a Warning: a Check returning it stays ready.
func Warn(err error) error { return &Warning{Err: err} }

// Server is the operational HTTP server.
type Server struct {
	srv *http.Server
	ln  net.Listener
}

// Option changes what Handler serves.
type Option func(*options)

type options struct{ pprof bool }

// WithPprof serves net/http/pprof's handlers under /debug/pprof/ (the
// index, cmdline, profile, symbol, trace and every named profile such as
// heap and goroutine). Off unless asked for: a profile shows the program's
// internals and a CPU profile costs CPU while it runs.
func WithPprof(on bool) Option { return func(o *options) { o.pprof = on } }

// Handler returns the mux for /healthz, /readyz and /metrics, and for
// /debug/pprof/ with WithPprof(true).
func Handler(checks map[string]Check, gatherer prometheus.Gatherer, opts ...Option) http.Handler {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	mux := http.NewServeMux()
	if o.pprof {
		// Registered on this mux only: importing net/http/pprof also
		// registers on http.DefaultServeMux, which nothing here serves.
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	names := make([]string, 0, len(checks))
	for name := range checks {
		names = append(names, name)
	}
	sort.Strings(names)
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		var b strings.Builder
		ready := true
		for _, name := range names {
			err := checks[name](r.Context())
			if w, ok := errors.AsType[*Warning](err); ok {
				fmt.Fprintf(&b, "%s: ok (warning: %v)\n", name, w.Err)
				continue
			}
			if err != nil {
				ready = false
				fmt.Fprintf(&b, "%s: not ready: %v\n", name, err)
			} else {
				fmt.Fprintf(&b, "%s: ok\n", name)
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprint(w, b.String())
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	return mux
}

// Listen binds addr (":0" picks a free port) and returns a server ready to Serve.
func Listen(addr string, h http.Handler) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return &Server{ln: ln, srv: &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}}, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until Shutdown; it returns nil after a clean shutdown.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve ops http: %w", err)
	}
	return nil
}

// Shutdown stops the server, waiting for requests in flight until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	// Shutdown closes only listeners Serve was given; close ours in case
	// Serve never ran.
	if cerr := s.ln.Close(); err == nil && cerr != nil && !errors.Is(cerr, net.ErrClosed) {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("shut ops http down: %w", err)
	}
	return nil
}
