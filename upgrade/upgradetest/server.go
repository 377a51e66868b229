// Package upgradetest is an in-process fake of the GeminiDB API and of IAM's
// password login, speaking the real wire format over HTTP, for end-to-end
// tests of package upgrade and of its users.
//
// It serves GET /v3/{project_id}/instances (id, name, datastore_type,
// offset, limit), POST /v3/{project_id}/instances/db-upgrade,
// GET /v3/{project_id}/jobs, GET /v3/{project_id}/instances/{id}/ops-window
// and POST /v3/auth/tokens, and answers anything else like the API gateway:
// 404 APIG.0101. Tests drive job states and inject failures and delays.
package upgradetest

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
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

type iamUser struct{ domain, user, password string }

type failure struct {
	suffix string
	status int
	code   string
	msg    string
	left   int
}

type fakeJob struct {
	id, name, status, progress, failReason string
	start, end                             time.Time
	instanceID, instanceName               string
	outcome                                *JobOutcome // how it ends by itself; nil: driven by the caller
}

// JobOutcome is how the patch jobs the fake starts for an instance end by
// themselves (see SetJobOutcome).
type JobOutcome struct {
	// Duration is how long a job runs, on the fake's clock (WithClock).
	Duration time.Duration
	// NewVersion is the instance's whole version after a job that completed;
	// "" keeps its version (the patch is still no longer available).
	NewVersion string
	// FailReason, when set, makes the job fail with this reason instead;
	// the instance keeps its version and its patch.
	FailReason string
}

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

	mu         sync.Mutex
	instances  []*upgrade.Instance
	results    map[string][2]string // instance → error code, message for the next batch
	failures   []*failure
	delays     map[string]time.Duration
	jobs       map[string]*fakeJob
	jobOrder   []string
	batchCalls [][]string
	calls      []string // request paths in arrival order
	logins     int
	tokens     map[string]time.Time  // issued IAM token → expiry
	outcomes   map[string]JobOutcome // instance ID → how its jobs end by themselves
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
	}
	for _, o := range opts {
		o(s)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen on a free port of 127.0.0.1: %w", err)
	}
	s.srv = &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(s.serveHTTP)}}
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

// SetJobOutcome makes every patch job started for instanceID from now on
// end by itself: Duration after the batch call, on the fake's clock, it is
// Completed (the instance then runs NewVersion and has no patch available)
// or, with a FailReason, Failed. While it runs its progress grows with the
// time passed. The job ends the moment anyone looks (an API call, Job,
// Instance) at or after its end, with exactly Duration between its start
// and end times. A zero Duration removes the outcome: jobs then run until
// the caller ends them (SetJob, CompleteJob, FailJob), as by default.
func (s *Server) SetJobOutcome(instanceID string, o JobOutcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o.Duration <= 0 {
		delete(s.outcomes, instanceID)
		return
	}
	s.outcomes[instanceID] = o
}

// settleLocked ends the jobs whose outcome is due on the fake's clock.
func (s *Server) settleLocked() {
	now := s.now()
	for _, id := range s.jobOrder {
		j := s.jobs[id]
		if j.outcome == nil || j.status != upgrade.JobRunning {
			continue
		}
		end := j.start.Add(j.outcome.Duration)
		if now.Before(end) {
			continue
		}
		j.progress, j.end = "", end
		if j.outcome.FailReason != "" {
			j.status, j.failReason = upgrade.JobFailed, j.outcome.FailReason
		} else {
			j.status, j.failReason = upgrade.JobCompleted, ""
			if in := s.find(j.instanceID); in != nil {
				if j.outcome.NewVersion != "" {
					in.Version, in.WholeVersion = majorMinor(j.outcome.NewVersion), j.outcome.NewVersion
				}
				in.PatchAvailable = false
			}
		}
		s.clearAction(j.instanceID)
	}
}

// majorMinor is the datastore version of a whole version: "3.11" of "3.11.3.5".
func majorMinor(whole string) string {
	parts := strings.SplitN(whole, ".", 3)
	if len(parts) < 2 {
		return whole
	}
	return parts[0] + "." + parts[1]
}

// progressLocked is a running job's progress: the share of its outcome's
// duration that has passed, or what the caller set.
func (s *Server) progressLocked(j *fakeJob) string {
	if j.outcome == nil || j.status != upgrade.JobRunning {
		return j.progress
	}
	done := s.now().Sub(j.start) * 100 / j.outcome.Duration
	return fmt.Sprintf("%d%%", min(max(done, 0), 99))
}

// Client returns an HTTP client that reaches the fake.
func (s *Server) Client() *http.Client { return s.srv.Client() }

// AddInstance adds inst to the project (replacing an instance with the same ID).
func (s *Server) AddInstance(inst upgrade.Instance) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := cloneInstance(inst)
	for i, in := range s.instances {
		if in.ID == inst.ID {
			s.instances[i] = &c
			return
		}
	}
	s.instances = append(s.instances, &c)
}

// SetInstance changes the instance with this ID in place.
func (s *Server) SetInstance(id string, mutate func(*upgrade.Instance)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.find(id)
	if in == nil {
		s.errorf("upgradetest: SetInstance: no instance %s", id)
		return
	}
	mutate(in)
}

// RemoveInstance deletes the instance with this ID from the project.
func (s *Server) RemoveInstance(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.instances = slices.DeleteFunc(s.instances, func(in *upgrade.Instance) bool { return in.ID == id })
}

// Instance returns the current state of the instance with this ID.
func (s *Server) Instance(id string) (upgrade.Instance, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked()
	in := s.find(id)
	if in == nil {
		return upgrade.Instance{}, false
	}
	return cloneInstance(*in), true
}

// SetUpgradeResult makes the next batch call that includes instanceID answer
// errorCode and errorMessage for it instead of starting a job.
func (s *Server) SetUpgradeResult(instanceID, errorCode, errorMessage string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.results[instanceID] = [2]string{errorCode, errorMessage}
}

// FailNext makes the next n requests whose path ends with path (e.g.
// "/instances/db-upgrade", "/instances", "/jobs", "/v3/auth/tokens") answer
// status with {"error_code": code, "error_msg": msg}, before any credential check.
func (s *Server) FailNext(path string, status int, code, msg string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = append(s.failures, &failure{suffix: path, status: status, code: code, msg: msg, left: n})
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

// SetJob sets a job's status, progress and fail reason; an unknown job ID
// creates a job (named UpgradeDbVersion, without instance).
func (s *Server) SetJob(jobID, status, progress, failReason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[jobID]
	if j == nil {
		j = &fakeJob{id: jobID, name: "UpgradeDbVersion", start: s.now()}
		s.jobs[jobID] = j
		s.jobOrder = append(s.jobOrder, jobID)
	}
	j.status, j.progress, j.failReason = status, progress, failReason
	if status == upgrade.JobCompleted || status == upgrade.JobFailed {
		if j.end.IsZero() {
			j.end = s.now()
		}
		s.clearAction(j.instanceID)
	} else {
		j.end = time.Time{}
	}
}

// CompleteJob finishes a job successfully: its instance now runs newVersion
// (when not empty) and has no patch available.
func (s *Server) CompleteJob(jobID, newVersion string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[jobID]
	if j == nil {
		s.errorf("upgradetest: CompleteJob: no job %s", jobID)
		return
	}
	j.status, j.progress, j.failReason, j.end = upgrade.JobCompleted, "", "", s.now()
	if in := s.find(j.instanceID); in != nil {
		if newVersion != "" {
			in.Version = newVersion
			in.WholeVersion = newVersion
		}
		in.PatchAvailable = false
	}
	s.clearAction(j.instanceID)
}

// FailJob finishes a job with a failure reason; the instance keeps its version.
func (s *Server) FailJob(jobID, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[jobID]
	if j == nil {
		s.errorf("upgradetest: FailJob: no job %s", jobID)
		return
	}
	j.status, j.progress, j.failReason, j.end = upgrade.JobFailed, "", reason, s.now()
	s.clearAction(j.instanceID)
}

// SetAKSK changes the access key and secret key the fake accepts from now
// on, as rotating the key would; empty keys disable AK/SK authentication.
func (s *Server) SetAKSK(ak, sk string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ak, s.sk = ak, sk
}

// RevokeTokens invalidates every token the fake IAM has issued, as a
// password change would; the next API call with one of them gets 401.
func (s *Server) RevokeTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.tokens)
}

// BatchCalls returns the instance_ids of every batch call that reached the
// batch handler (credentials accepted, no injected failure), in order.
func (s *Server) BatchCalls() [][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([][]string, len(s.batchCalls))
	for i, c := range s.batchCalls {
		out[i] = slices.Clone(c)
	}
	return out
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

// Logins counts successful IAM logins.
func (s *Server) Logins() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logins
}

// JobsFor returns the IDs of the jobs started for an instance, oldest first.
func (s *Server) JobsFor(instanceID string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, id := range s.jobOrder {
		if s.jobs[id].instanceID == instanceID {
			out = append(out, id)
		}
	}
	return out
}

// Job returns a job as the jobs API would report it.
func (s *Server) Job(jobID string) (upgrade.Job, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked()
	j := s.jobs[jobID]
	if j == nil {
		return upgrade.Job{}, false
	}
	return upgrade.Job{
		ID: j.id, Name: j.name, Status: j.status, Progress: s.progressLocked(j),
		Started: j.start, Ended: j.end, InstanceID: j.instanceID, InstanceName: j.instanceName, FailReason: j.failReason,
	}, true
}

func (s *Server) find(id string) *upgrade.Instance {
	for _, in := range s.instances {
		if in.ID == id {
			return in
		}
	}
	return nil
}

// upgradeAction is what the fake puts in an instance's actions while a patch job runs.
const upgradeAction = "UPGRADE_DB_VERSION"

func (s *Server) clearAction(instanceID string) {
	if in := s.find(instanceID); in != nil {
		in.Actions = slices.DeleteFunc(in.Actions, func(a string) bool { return a == upgradeAction })
		if len(in.Actions) == 0 {
			in.Actions = nil
		}
	}
}

func cloneInstance(in upgrade.Instance) upgrade.Instance {
	in.Actions = slices.Clone(in.Actions)
	in.Nodes = slices.Clone(in.Nodes)
	return in
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
	if fail != nil {
		writeError(w, fail.status, fail.code, fail.msg)
		return
	}
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
	case "window":
		s.opsWindow(w, strings.Split(sub, "/")[1])
	}
}

// authenticate returns "" when the request carries accepted credentials,
// else the reason, which names no secret.
func (s *Server) authenticate(r *http.Request, body []byte) string {
	s.mu.Lock()
	staticToken, ak, sk := s.staticToken, s.ak, s.sk
	s.mu.Unlock()
	if staticToken == "" && s.iam == nil && ak == "" {
		return ""
	}
	if tok := r.Header.Get("X-Auth-Token"); tok != "" {
		if staticToken != "" && tok == staticToken {
			return ""
		}
		s.mu.Lock()
		exp, ok := s.tokens[tok]
		s.mu.Unlock()
		if ok && s.now().Before(exp) {
			return ""
		}
		if ok {
			return "token expired"
		}
		return "verify token failed"
	}
	if strings.HasPrefix(r.Header.Get("Authorization"), "SDK-HMAC-SHA256 ") {
		if ak == "" {
			return "AK/SK authentication is not enabled"
		}
		if err := verifyAKSK(r, body, ak, sk, s.now()); err != nil {
			return "verify aksk signature fail: " + err.Error()
		}
		return ""
	}
	return "no credentials"
}

func (s *Server) login(w http.ResponseWriter, body []byte) {
	var req struct {
		Auth struct {
			Identity struct {
				Methods  []string `json:"methods"`
				Password struct {
					User struct {
						Name     string `json:"name"`
						Password string `json:"password"`
						Domain   struct {
							Name string `json:"name"`
						} `json:"domain"`
					} `json:"user"`
				} `json:"password"`
			} `json:"identity"`
			Scope struct {
				Project struct {
					ID string `json:"id"`
				} `json:"project"`
			} `json:"scope"`
		} `json:"auth"`
	}
	if err := json.Unmarshal(body, &req); err != nil || !slices.Contains(req.Auth.Identity.Methods, "password") {
		writeError(w, http.StatusBadRequest, "IAM.0007", "The request body is invalid.")
		return
	}
	u := req.Auth.Identity.Password.User
	if u.Name != s.iam.user || u.Password != s.iam.password || u.Domain.Name != s.iam.domain {
		writeError(w, http.StatusUnauthorized, "APIG.0301", "Incorrect IAM authentication information: the username or password is wrong.")
		return
	}
	if req.Auth.Scope.Project.ID != s.ProjectID {
		writeError(w, http.StatusUnauthorized, "APIG.0301", "Incorrect IAM authentication information: the project is not accessible.")
		return
	}
	tok := "MIIfake" + randomHex(32)
	now := s.now()
	exp := now.Add(s.tokenLifetime)
	s.mu.Lock()
	s.tokens[tok] = exp
	s.logins++
	s.mu.Unlock()
	w.Header().Set("X-Subject-Token", tok)
	writeJSON(w, http.StatusCreated, map[string]any{"token": map[string]any{
		"expires_at": exp.UTC().Format("2006-01-02T15:04:05.000000Z"),
		"issued_at":  now.UTC().Format("2006-01-02T15:04:05.000000Z"),
		"methods":    []string{"password"},
		"project":    map[string]any{"id": s.ProjectID, "name": "eu-de"},
		"user":       map[string]any{"name": s.iam.user, "domain": map[string]any{"name": s.iam.domain}},
	}})
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	offset, limit := 0, 100
	if v := q.Get("offset"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "DBS.200001", "Invalid parameter: offset.")
			return
		}
		offset = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			writeError(w, http.StatusBadRequest, "DBS.200001", "Invalid parameter: limit.")
			return
		}
		limit = n
	}
	id, name, engine := q.Get("id"), q.Get("name"), strings.ToLower(q.Get("datastore_type"))
	s.mu.Lock()
	var match []map[string]any
	for _, in := range s.instances {
		if id != "" && in.ID != id {
			continue
		}
		if name != "" {
			if pat, fuzzy := strings.CutPrefix(name, "*"); fuzzy {
				if !strings.Contains(in.Name, pat) {
					continue
				}
			} else if in.Name != name {
				continue
			}
		}
		if engine != "" && in.Engine != engine {
			continue
		}
		match = append(match, InstanceJSON(*in))
	}
	s.mu.Unlock()
	page := []map[string]any{}
	if offset < len(match) {
		page = match[offset:min(offset+limit, len(match))]
	}
	writeJSON(w, http.StatusOK, map[string]any{"instances": page, "total_count": len(match)})
}

func (s *Server) batch(w http.ResponseWriter, body []byte) {
	var req struct {
		InstanceIDs []string `json:"instance_ids"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, "DBS.280001", "Invalid parameter: the request body is not valid JSON.")
		return
	}
	if len(req.InstanceIDs) == 0 {
		writeError(w, http.StatusBadRequest, "DBS.280001", "Invalid parameter: instance_ids is required.")
		return
	}
	if len(req.InstanceIDs) > upgrade.MaxBatch {
		writeError(w, http.StatusBadRequest, "DBS.280001", fmt.Sprintf("Invalid parameter: at most %d instance IDs are allowed.", upgrade.MaxBatch))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.batchCalls = append(s.batchCalls, slices.Clone(req.InstanceIDs))
	engine := ""
	for _, id := range req.InstanceIDs {
		in := s.find(id)
		if in == nil {
			continue
		}
		if !slices.Contains(s.batchEngines, in.Engine) {
			writeError(w, http.StatusBadRequest, "DBS.280001", fmt.Sprintf("Invalid parameter: the engine %s does not support batch patching.", in.Engine))
			return
		}
		if engine != "" && in.Engine != engine {
			writeError(w, http.StatusBadRequest, "DBS.280001", "Invalid parameter: the instances must be of the same engine type.")
			return
		}
		engine = in.Engine
	}
	results := []upgrade.UpgradeResult{}
	for _, id := range req.InstanceIDs {
		res := upgrade.UpgradeResult{InstanceID: id}
		in := s.find(id)
		if e, ok := s.results[id]; ok {
			delete(s.results, id)
			res.ErrorCode, res.ErrorMessage = e[0], e[1]
		} else if in == nil {
			res.ErrorCode, res.ErrorMessage = "DBS.200002", "The DB instance does not exist."
		} else if in.Status != "normal" || len(in.Actions) > 0 {
			res.ErrorCode, res.ErrorMessage = "DBS.200011", "The status of DB instance does not allow the operation."
		} else if !in.PatchAvailable {
			res.ErrorCode, res.ErrorMessage = "DBS.280001", "No patch is available for the DB instance."
		} else {
			j := &fakeJob{id: s.nextJobID(), name: "UpgradeDbVersion", status: upgrade.JobRunning, progress: "0%", start: s.now(), instanceID: in.ID, instanceName: in.Name}
			if o, ok := s.outcomes[in.ID]; ok {
				j.outcome = &o
			}
			s.jobs[j.id] = j
			s.jobOrder = append(s.jobOrder, j.id)
			in.Actions = append(in.Actions, upgradeAction)
			res.JobID = j.id
		}
		results = append(results, res)
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"upgrade_results": results})
}

func (s *Server) listJobs(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	s.mu.Lock()
	jobs := []map[string]any{}
	for _, jid := range s.jobOrder {
		if id != "" && jid != id {
			continue
		}
		j := s.jobs[jid]
		end := ""
		if !j.end.IsZero() {
			end = j.end.UTC().Format(JobTimeLayout)
		}
		jobs = append(jobs, map[string]any{
			"id":          j.id,
			"name":        j.name,
			"status":      j.status,
			"created":     j.start.UTC().Format(JobTimeLayout),
			"start_time":  j.start.UTC().Format(JobTimeLayout),
			"end_time":    end,
			"progress":    s.progressLocked(j),
			"instance":    map[string]any{"id": j.instanceID, "name": j.instanceName},
			"fail_reason": j.failReason,
		})
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"total_count": len(jobs), "jobs": jobs})
}

func (s *Server) opsWindow(w http.ResponseWriter, id string) {
	s.mu.Lock()
	in := s.find(id)
	var win string
	if in != nil {
		win = in.MaintenanceWindow
	}
	s.mu.Unlock()
	if in == nil {
		writeError(w, http.StatusNotFound, "DBS.200002", "The DB instance does not exist.")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"maintenance_window": win})
}
