// Package upgradetest is an in-process fake of the GeminiDB API and of IAM's
// password login, speaking the real wire format over HTTP, for end-to-end
// tests of package upgrade and of its users.
//
// It serves GET /v3/{project_id}/instances (id, name, datastore_type,
// offset, limit), POST /v3/{project_id}/instances/db-upgrade,
// GET /v3/{project_id}/jobs, GET /v3/{project_id}/instances/{id}/ops-window,
// the tag query POST /v3/{project_id}/instances/resource-instances/action
// and POST /v3/auth/tokens, and answers anything else like the API gateway:
// 404 APIG.0101. Tests drive job states, tag instances, and inject failures
// (before or after the request is handled: FailNext, FailNextAfter,
// BreakNext), delays and odd batch answers (RewriteNextBatch).
//
// The files: server.go the server, routing and failure injection;
// instances.go, jobs.go, batch.go, tags.go and iam.go one API each.
package upgradetest

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// DefaultProjectID is the project the fake serves unless WithProjectID says otherwise.
const DefaultProjectID = "619d3e78f61b4be68bc5aa0b59edcf7b"

// JobTimeLayout is how the jobs API writes times, e.g. 2023-09-12T06:44:01+0000.
const JobTimeLayout = "2006-01-02T15:04:05-0700"

// ServerOption configures a Server.
type ServerOption func(*Server)

// WithToken makes the fake accept X-Auth-Token: token.
func WithToken(token string) ServerOption { return func(s *Server) { s.staticToken = token } }

// WithIAMUser enables the IAM password login for this user; the tokens it
// issues (random, valid for the token lifetime) are accepted by the API.
func WithIAMUser(domain, user, password string) ServerOption {
	return func(s *Server) { s.iam = &iamUser{domain: domain, user: user, password: password} }
}

// WithTokenLifetime sets how long IAM tokens issued by the fake live (default 24h).
func WithTokenLifetime(d time.Duration) ServerOption {
	return func(s *Server) { s.tokenLifetime = d }
}

// WithAKSK makes the fake accept requests signed with this access key and
// secret key; signatures are recomputed from the request and compared.
func WithAKSK(ak, sk string) ServerOption { return func(s *Server) { s.ak, s.sk = ak, sk } }

// WithProjectID sets the project ID the fake serves (default DefaultProjectID).
func WithProjectID(id string) ServerOption { return func(s *Server) { s.ProjectID = id } }

// WithClock sets the fake's clock, used for token expiry, signature dates and job times.
func WithClock(now func() time.Time) ServerOption { return func(s *Server) { s.now = now } }

// WithJobIDs makes the fake take the ID of every job it starts from next
// instead of a random UUID, e.g. for output that must not change between
// runs. next is called with the fake's lock held and must not call back.
func WithJobIDs(next func() string) ServerOption { return func(s *Server) { s.nextJobID = next } }

// WithBatchEngines sets the engines the fake's batch call accepts (default cassandra, influxdb).
func WithBatchEngines(engines ...string) ServerOption {
	return func(s *Server) { s.batchEngines = engines }
}

type failure struct {
	suffix string
	status int
	code   string
	msg    string
	left   int
	after  bool  // handle the request first, then answer the failure
	brk    Break // break the answer instead of answering status
}

// Break is how the fake breaks the answer to a request it has handled (see BreakNext).
type Break int

// The ways BreakNext breaks an answer.
const (
	// BreakReset closes the connection without any answer.
	BreakReset Break = iota + 1
	// BreakTruncate sends the status line, the headers with the full
	// Content-Length and half of the body, then closes the connection.
	BreakTruncate
)

// Server is a running fake. URL is the GeminiDB endpoint and IAMURL the IAM
// endpoint (the same server). Without any of WithToken, WithIAMUser and
// WithAKSK it checks no credentials. It is safe for concurrent use.
type Server struct {
	URL       string // GeminiDB API base URL
	IAMURL    string // IAM base URL
	ProjectID string // project served

	t         testing.TB // nil outside a test (Start)
	srv       *httptest.Server
	now       func() time.Time
	nextJobID func() string

	staticToken   string
	iam           *iamUser
	tokenLifetime time.Duration
	ak, sk        string // guarded by mu: SetAKSK changes them
	batchEngines  []string

	conns atomic.Int64 // connections accepted

	mu         sync.Mutex
	instances  []*upgrade.Instance
	results    map[string][2]string // instance → error code, message for the next batch
	failures   []*failure
	rewrite    BatchRewrite // rows of the next batch answer
	delays     map[string]time.Duration
	jobs       map[string]*fakeJob
	jobOrder   []string
	batchCalls [][]string
	calls      []string // request paths in arrival order
	logins     int
	tokens     map[string]time.Time         // issued IAM token → expiry
	outcomes   map[string]JobOutcome        // instance ID → how its jobs end by themselves
	tags       map[string]map[string]string // instance ID → its tags
}

// NewServer starts a fake; it is closed when the test ends.
func NewServer(t testing.TB, opts ...ServerOption) *Server {
	t.Helper()
	s, err := Start(opts...)
	if err != nil {
		t.Fatalf("upgradetest: %v", err)
	}
	s.t = t
	t.Cleanup(s.Close)
	return s
}

// Start starts a fake outside a test, e.g. for the demo, listening on a
// free port of 127.0.0.1. The caller stops it with Close. Misuse that
// would fail a test (SetInstance of an unknown ID, …) is ignored.
func Start(opts ...ServerOption) (*Server, error) {
	s := &Server{
		ProjectID:     DefaultProjectID,
		now:           time.Now,
		nextJobID:     uuid,
		tokenLifetime: 24 * time.Hour,
		batchEngines:  []string{"cassandra", "influxdb"},
		results:       map[string][2]string{},
		delays:        map[string]time.Duration{},
		jobs:          map[string]*fakeJob{},
		tokens:        map[string]time.Time{},
		outcomes:      map[string]JobOutcome{},
		tags:          map[string]map[string]string{},
	}
	for _, o := range opts {
		o(s)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen on a free port of 127.0.0.1: %w", err)
	}
	s.srv = &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(s.serveHTTP), ConnState: s.connState}}
	s.srv.Start()
	s.URL = s.srv.URL
	s.IAMURL = s.srv.URL
	return s, nil
}

// Close stops the fake's HTTP server, waiting for requests in flight.
// It may be called more than once.
func (s *Server) Close() { s.srv.Close() }

// errorf fails the test that started the fake; outside a test it does nothing.
func (s *Server) errorf(format string, args ...any) {
	if s.t != nil {
		s.t.Helper()
		s.t.Errorf(format, args...)
	}
}

// connState counts the connections the fake accepts.
func (s *Server) connState(_ net.Conn, st http.ConnState) {
	if st == http.StateNew {
		s.conns.Add(1)
	}
}

// Connections counts the TCP connections the fake has accepted, e.g. to
// check that a client reuses keep-alive connections.
func (s *Server) Connections() int { return int(s.conns.Load()) }

// Client returns an HTTP client that reaches the fake.
func (s *Server) Client() *http.Client { return s.srv.Client() }

// FailNext makes the next n requests whose path ends with path (e.g.
// "/instances/db-upgrade", "/instances", "/jobs", "/v3/auth/tokens") answer
// status with {"error_code": code, "error_msg": msg}, before any credential check.
func (s *Server) FailNext(path string, status int, code, msg string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = append(s.failures, &failure{suffix: path, status: status, code: code, msg: msg, left: n})
}

// FailNextAfter is FailNext, except that each of those requests is handled
// first (a batch call starts its jobs) and only then answered status with
// code and msg, as an API gateway does when it gives up waiting for a backend
// that goes on working (504 APIG.0201 "Backend timeout").
func (s *Server) FailNextAfter(path string, status int, code, msg string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = append(s.failures, &failure{suffix: path, status: status, code: code, msg: msg, left: n, after: true})
}

// BreakNext makes the next n requests whose path ends with path be handled
// (a batch call starts its jobs) and then answered broken, as how says: the
// connection reset without an answer, or the answer cut off mid-body.
func (s *Server) BreakNext(path string, how Break, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = append(s.failures, &failure{suffix: path, left: n, after: true, brk: how})
}

// SetDelay delays every answer to requests whose path ends with path by d
// (0 removes the delay). A client that gives up ends the wait.
func (s *Server) SetDelay(path string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d <= 0 {
		delete(s.delays, path)
		return
	}
	s.delays[path] = d
}

// Calls counts the requests received whose path ends with pathSuffix,
// whatever their answer.
func (s *Server) Calls(pathSuffix string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, p := range s.calls {
		if strings.HasSuffix(p, pathSuffix) {
			n++
		}
	}
	return n
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Request-Id", randomHex(16))
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]string{"error_code": code, "error_msg": msg})
}

func notFoundAPI(w http.ResponseWriter) {
	writeError(w, http.StatusNotFound, "APIG.0101", "The API does not exist or has not been published in the environment.")
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	path := r.URL.Path

	s.mu.Lock()
	s.calls = append(s.calls, path)
	s.settleLocked()
	var delay time.Duration
	for suffix, d := range s.delays {
		if strings.HasSuffix(path, suffix) && d > delay {
			delay = d
		}
	}
	var fail *failure
	for _, f := range s.failures {
		if f.left > 0 && strings.HasSuffix(path, f.suffix) {
			f.left--
			fail = f
			break
		}
	}
	s.mu.Unlock()

	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	switch {
	case fail == nil:
		s.route(w, r, body)
	case !fail.after:
		writeError(w, fail.status, fail.code, fail.msg)
	default:
		rec := httptest.NewRecorder()
		s.route(rec, r, body)
		if fail.brk == 0 {
			writeError(w, fail.status, fail.code, fail.msg)
			return
		}
		breakAnswer(w, rec, fail.brk)
	}
}

// breakAnswer answers the recorded answer rec broken as how says.
func breakAnswer(w http.ResponseWriter, rec *httptest.ResponseRecorder, how Break) {
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	if how == BreakTruncate {
		b := rec.Body.Bytes()
		fmt.Fprintf(buf, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", rec.Code, http.StatusText(rec.Code), len(b))
		_, _ = buf.Write(b[:len(b)/2])
		_ = buf.Flush()
	}
}

// route serves a request that no test hook intercepted.
func (s *Server) route(w http.ResponseWriter, r *http.Request, body []byte) {
	path := r.URL.Path
	if path == "/v3/auth/tokens" {
		if r.Method != http.MethodPost || s.iam == nil {
			notFoundAPI(w)
			return
		}
		s.login(w, body)
		return
	}

	rest, ok := strings.CutPrefix(path, "/v3/")
	project, sub, _ := strings.Cut(rest, "/")
	route := ""
	switch {
	case !ok:
	case r.Method == http.MethodGet && sub == "instances":
		route = "list"
	case r.Method == http.MethodPost && sub == "instances/db-upgrade":
		route = "batch"
	case r.Method == http.MethodPost && sub == "instances/resource-instances/action":
		route = "tags"
	case r.Method == http.MethodGet && sub == "jobs":
		route = "jobs"
	case r.Method == http.MethodGet && strings.HasPrefix(sub, "instances/") && strings.HasSuffix(sub, "/ops-window") && strings.Count(sub, "/") == 2:
		route = "window"
	}
	if route == "" {
		notFoundAPI(w)
		return
	}
	if err := s.authenticate(r, body); err != "" {
		writeError(w, http.StatusUnauthorized, "APIG.0301", "Incorrect IAM authentication information: "+err)
		return
	}
	if project != s.ProjectID {
		writeError(w, http.StatusBadRequest, "DBS.200604", "The project ID in the URL does not match the project of the request.")
		return
	}
	switch route {
	case "list":
		s.list(w, r)
	case "batch":
		s.batch(w, body)
	case "jobs":
		s.listJobs(w, r)
	case "tags":
		s.tagQuery(w, body)
	case "window":
		s.opsWindow(w, strings.Split(sub, "/")[1])
	}
}

// authenticate returns "" when the request carries accepted credentials,
// else the reason, which names no secret.
