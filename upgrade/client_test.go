package upgrade_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade/upgradetest"
)

// Secrets used by the tests; no error text may ever contain them.
const (
	testToken    = "tok-5ecret-x41"
	testUser     = "patch-bot"
	testPassword = "pa55-5ecret-w0rd"
	testDomain   = "OTC-EU-DE-0000000000"
	testAK       = "AKIDEXAMPLE0001"
	testSK       = "sk-5ecret-k3y-value"
)

var secrets = []string{testToken, testPassword, testSK}

// fastRetry keeps retry tests quick.
var fastRetry = upgrade.WithRetry(upgrade.RetryPolicy{MaxAttempts: 4, MinBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond, Deadline: 5 * time.Second})

func newTokenClient(t *testing.T, s *upgradetest.Server, opts ...upgrade.Option) *upgrade.Client {
	t.Helper()
	c, err := upgrade.NewClient(s.URL, s.ProjectID, upgrade.TokenAuth(testToken), append([]upgrade.Option{fastRetry}, opts...)...)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	return c
}

func assertNoSecret(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	for _, s := range secrets {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error %q contains a secret", err)
		}
	}
}

func apiError(t *testing.T, err error) *upgrade.APIError {
	t.Helper()
	var ae *upgrade.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("got error %v (%T), want an *upgrade.APIError", err, err)
	}
	return ae
}

// TestSeedExample replays the documented example: two instances, one gets a
// job, the other DBS.200011.
func TestSeedExample(t *testing.T) {
	s := upgradetest.NewServer(t, upgradetest.WithToken(testToken), upgradetest.WithProjectID("619d3e78f61b4be68bc5aa0b59edcf7b"))
	ok := upgradetest.NewInstance("cass-1", "cassandra")
	ok.ID = "046287aae57843b1a7bc61b7a8812f41in13"
	busy := upgradetest.NewInstance("cass-2", "cassandra")
	busy.ID = "3d1e04f49efa473a8c7eaf07ed7ff870in13"
	busy.Status = "abnormal"
	s.AddInstance(ok)
	s.AddInstance(busy)
	c := newTokenClient(t, s)

	got, err := c.BatchUpgrade(context.Background(), []string{ok.ID, busy.ID})
	if err != nil {
		t.Fatalf("BatchUpgrade: %v", err)
	}
	if len(got) != 2 {
		t.Fatalf("got %d results, want 2", len(got))
	}
	if got[0].InstanceID != ok.ID || !got[0].Submitted() || got[0].ErrorCode != "" {
		t.Errorf("got first result %+v, want a job for %s", got[0], ok.ID)
	}
	want := upgrade.UpgradeResult{InstanceID: busy.ID, ErrorCode: "DBS.200011", ErrorMessage: "The status of DB instance does not allow the operation."}
	if got[1] != want {
		t.Errorf("got second result %+v, want %+v", got[1], want)
	}
	if calls := s.BatchCalls(); len(calls) != 1 || !slices.Equal(calls[0], []string{ok.ID, busy.ID}) {
		t.Errorf("got batch calls %v, want one with both IDs", calls)
	}
	if jobs := s.JobsFor(ok.ID); len(jobs) != 1 || jobs[0] != got[0].JobID {
		t.Errorf("got jobs %v for %s, want [%s]", jobs, ok.ID, got[0].JobID)
	}

	// Follow the job to its end.
	j, err := c.Job(context.Background(), got[0].JobID)
	if err != nil {
		t.Fatalf("Job: %v", err)
	}
	if j.Status != upgrade.JobRunning || j.Progress != "0%" || j.InstanceID != ok.ID || j.InstanceName != "cass-1" || j.Name != "UpgradeDbVersion" {
		t.Errorf("got job %+v, want Running 0%% of %s", j, ok.ID)
	}
	if j.Started.IsZero() || !j.Ended.IsZero() || j.Finished() {
		t.Errorf("got started %v ended %v finished %v, want started, not ended", j.Started, j.Ended, j.Finished())
	}
	s.SetJob(j.ID, upgrade.JobRunning, "14%", "")
	if j, _ = c.Job(context.Background(), j.ID); j.Progress != "14%" {
		t.Errorf("got progress %q, want 14%%", j.Progress)
	}
	s.CompleteJob(j.ID, "3.11.4")
	j, err = c.Job(context.Background(), j.ID)
	if err != nil {
		t.Fatalf("Job: %v", err)
	}
	if j.Status != upgrade.JobCompleted || j.Ended.IsZero() || !j.Finished() {
		t.Errorf("got job %+v, want Completed with an end time", j)
	}
	page, err := c.ListInstances(context.Background(), upgrade.ListOptions{ID: ok.ID})
	if err != nil {
		t.Fatalf("ListInstances: %v", err)
	}
	if len(page.Instances) != 1 || page.Instances[0].Version != "3.11.4" || page.Instances[0].PatchAvailable {
		t.Errorf("got %+v, want version 3.11.4 and no patch available", page.Instances)
	}
}

func TestBatchUpgradeValidatesBeforeIO(t *testing.T) {
	s := upgradetest.NewServer(t, upgradetest.WithToken(testToken))
	c := newTokenClient(t, s)
	eleven := make([]string, 11)
	for i := range eleven {
		eleven[i] = fmt.Sprintf("id-%d", i)
	}
	for name, ids := range map[string][]string{"none": nil, "eleven": eleven, "blank": {"a", " "}, "duplicate": {"a", "a"}} {
		t.Run(name, func(t *testing.T) {
			if _, err := c.BatchUpgrade(context.Background(), ids); err == nil {
				t.Errorf("got nil error, want one")
			}
		})
	}
	if n := s.Calls("/db-upgrade"); n != 0 {
		t.Errorf("got %d calls, want 0", n)
	}
}

func TestFakeBatchValidation(t *testing.T) {
	s := upgradetest.NewServer(t, upgradetest.WithToken(testToken))
	cass := upgradetest.NewInstance("c", "cassandra")
	infl := upgradetest.NewInstance("i", "influxdb")
	s.AddInstance(cass)
	s.AddInstance(infl)
	c := newTokenClient(t, s)
	_, err := c.BatchUpgrade(context.Background(), []string{cass.ID, infl.ID})
	if ae := apiError(t, err); ae.Status != 400 || ae.Code != "DBS.280001" {
		t.Errorf("mixed engines: got %d %s, want 400 DBS.280001", ae.Status, ae.Code)
	}
	res, err := c.BatchUpgrade(context.Background(), []string{"0123456789abcdef0123456789abcdefin06"})
	if err != nil {
		t.Fatalf("unknown instance: %v", err)
	}
	if len(res) != 1 || res[0].ErrorCode != "DBS.200002" {
		t.Errorf("unknown instance: got %+v, want DBS.200002", res)
	}
	s.SetUpgradeResult(cass.ID, "DBS.201015", "Another operation is in progress.")
	res, err = c.BatchUpgrade(context.Background(), []string{cass.ID})
	if err != nil || len(res) != 1 || res[0].ErrorCode != "DBS.201015" || res[0].ErrorMessage != "Another operation is in progress." {
		t.Errorf("injected result: got %+v, %v, want DBS.201015", res, err)
	}
	// The injected result is used once; the next call starts a job, and a
	// second patch while it runs is refused.
	if res, _ = c.BatchUpgrade(context.Background(), []string{cass.ID}); len(res) != 1 || !res[0].Submitted() {
		t.Errorf("got %+v, want a job", res)
	}
	if res, _ = c.BatchUpgrade(context.Background(), []string{cass.ID}); len(res) != 1 || res[0].ErrorCode != "DBS.200011" {
		t.Errorf("got %+v, want DBS.200011 while a patch runs", res)
	}
}

func TestAuthModes(t *testing.T) {
	newIAM := func(s *upgradetest.Server, password string) upgrade.Authenticator {
		return upgrade.NewIAMAuth(upgrade.IAMConfig{Endpoint: s.IAMURL, Username: testUser, Password: password, Domain: testDomain, ProjectID: s.ProjectID})
	}
	tests := []struct {
		name     string
		auth     func(s *upgradetest.Server) upgrade.Authenticator
		wantCode string // "" means success
	}{
		{name: "token", auth: func(*upgradetest.Server) upgrade.Authenticator { return upgrade.TokenAuth(testToken) }},
		{name: "wrong token", auth: func(*upgradetest.Server) upgrade.Authenticator { return upgrade.TokenAuth(testToken + "x") }, wantCode: "APIG.0301"},
		{name: "empty token", auth: func(*upgradetest.Server) upgrade.Authenticator { return upgrade.TokenAuth("") }, wantCode: "APIG.0301"},
		{name: "iam", auth: func(s *upgradetest.Server) upgrade.Authenticator { return newIAM(s, testPassword) }},
		{name: "iam wrong password", auth: func(s *upgradetest.Server) upgrade.Authenticator { return newIAM(s, testPassword+"x") }, wantCode: "APIG.0301"},
		{name: "aksk", auth: func(*upgradetest.Server) upgrade.Authenticator { return upgrade.AKSKAuth(testAK, testSK) }},
		{name: "aksk wrong sk", auth: func(*upgradetest.Server) upgrade.Authenticator { return upgrade.AKSKAuth(testAK, testSK+"x") }, wantCode: "APIG.0301"},
		{name: "aksk wrong ak", auth: func(*upgradetest.Server) upgrade.Authenticator { return upgrade.AKSKAuth("AKOTHER", testSK) }, wantCode: "APIG.0301"},
		{name: "aksk tampered", auth: func(*upgradetest.Server) upgrade.Authenticator { return tampered{upgrade.AKSKAuth(testAK, testSK)} }, wantCode: "APIG.0301"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := upgradetest.NewServer(t,
				upgradetest.WithToken(testToken),
				upgradetest.WithIAMUser(testDomain, testUser, testPassword),
				upgradetest.WithAKSK(testAK, testSK))
			in := upgradetest.NewInstance("my db", "cassandra")
			s.AddInstance(in)
			c, err := upgrade.NewClient(s.URL, s.ProjectID, tt.auth(s), fastRetry)
			if err != nil {
				t.Fatalf("NewClient: %v", err)
			}
			// A query with a space exercises canonical query escaping.
			page, err := c.ListInstances(context.Background(), upgrade.ListOptions{Name: "my db", Limit: 10})
			assertNoSecret(t, err)
			if tt.wantCode == "" {
				if err != nil {
					t.Fatalf("ListInstances: %v", err)
				}
				if len(page.Instances) != 1 || page.Instances[0].ID != in.ID {
					t.Errorf("got %+v, want %s", page.Instances, in.ID)
				}
				// A POST with a body must get through too, body intact.
				res, err := c.BatchUpgrade(context.Background(), []string{in.ID})
				if err != nil {
					t.Fatalf("BatchUpgrade: %v", err)
				}
				if len(res) != 1 || !res[0].Submitted() {
					t.Errorf("got %+v, want a job", res)
				}
				return
			}
			ae := apiError(t, err)
			if ae.Status != http.StatusUnauthorized || ae.Code != tt.wantCode {
				t.Errorf("got %d %s, want 401 %s", ae.Status, ae.Code, tt.wantCode)
			}
			if ae.Method == "" || ae.Path == "" {
				t.Errorf("got method %q path %q, want both set", ae.Method, ae.Path)
			}
			if !strings.Contains(err.Error(), "list instances") {
				t.Errorf("got %q, want it to name the call", err)
			}
			// A credential failure is not retried (five AK/SK failures lock the key).
			path := "/instances"
			if strings.HasPrefix(tt.name, "iam") {
				path = "/v3/auth/tokens"
			}
			if n := s.Calls(path); n != 1 {
				t.Errorf("got %d calls of %s, want 1", n, path)
			}
		})
	}
}

// tampered flips one hex digit of the signature after signing.
type tampered struct{ a upgrade.Authenticator }

func (t tampered) Wrap(next http.RoundTripper) http.RoundTripper {
	return t.a.Wrap(rtFunc(func(r *http.Request) (*http.Response, error) {
		h := r.Header.Get("Authorization")
		last := h[len(h)-1]
		repl := byte('0')
		if last == '0' {
			repl = '1'
		}
		r.Header.Set("Authorization", h[:len(h)-1]+string(repl))
		return next.RoundTrip(r)
	}))
}

type rtFunc func(*http.Request) (*http.Response, error)

func (f rtFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestAKSKMatchesPublishedAlgorithm signs a request with a fixed date and
// compares the vendor-signer output with an independent implementation of
// the published algorithm; it also checks the body survives signing.
func TestAKSKMatchesPublishedAlgorithm(t *testing.T) {
	body := `{"instance_ids":["a","b"]}`
	req, err := http.NewRequest(http.MethodPost, "https://gaussdb-nosql.eu-de.otc.t-systems.com/v3/p1/instances/db-upgrade?b=2&a=x%20y&a=1", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json;charset=utf-8")
	req.Header.Set("X-Sdk-Date", "20260312T094500Z")
	req.Header.Set("X-Project-Id", "p1")
	var got *http.Request
	var gotBody string
	rt := upgrade.AKSKAuth(testAK, testSK).Wrap(rtFunc(func(r *http.Request) (*http.Response, error) {
		got = r
		b := new(strings.Builder)
		if r.Body != nil {
			_, _ = fmt.Fprint(b, readAll(t, r))
		}
		gotBody = b.String()
		return &http.Response{StatusCode: 200, Body: http.NoBody, Request: r}, nil
	}))
	if _, err := rt.RoundTrip(req); err != nil {
		t.Fatalf("RoundTrip: %v", err)
	}
	if gotBody != body {
		t.Errorf("got body %q after signing, want %q", gotBody, body)
	}
	if d := got.Header.Get("X-Sdk-Date"); d != "20260312T094500Z" {
		t.Errorf("got X-Sdk-Date %q, want the fixed date", d)
	}
	signed := []string{"host", "x-project-id", "x-sdk-date"}
	sig := upgradetest.Signature(got.Method, got.URL.Path, got.URL.Query(), got.Header, got.URL.Host, signed, []byte(body), testSK)
	want := "SDK-HMAC-SHA256 Access=" + testAK + ", SignedHeaders=host;x-project-id;x-sdk-date, Signature=" + sig
	if a := got.Header.Get("Authorization"); a != want {
		t.Errorf("got Authorization\n%s\nwant\n%s", a, want)
	}
	if req.Header.Get("Authorization") != "" {
		t.Errorf("got the caller's request modified, want it untouched")
	}
}

func readAll(t *testing.T, r *http.Request) string {
	t.Helper()
	var sb strings.Builder
	buf := make([]byte, 512)
	for {
		n, err := r.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return sb.String()
}

// clock is an adjustable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newIAMClient(t *testing.T, s *upgradetest.Server, now func() time.Time, opts ...upgrade.Option) *upgrade.Client {
	t.Helper()
	auth := upgrade.NewIAMAuth(upgrade.IAMConfig{Endpoint: s.IAMURL, Username: testUser, Password: testPassword, Domain: testDomain, ProjectID: s.ProjectID, Now: now})
	c, err := upgrade.NewClient(s.URL, s.ProjectID, auth, append([]upgrade.Option{fastRetry}, opts...)...)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	return c
}

func TestIAMTokenRenewal(t *testing.T) {
	tests := []struct {
		name      string
		lifetime  time.Duration
		steps     []time.Duration // clock advances, one call after each
		wantLogin []int           // logins after each call
	}{
		// 10 minutes before expiry.
		{name: "24h token", lifetime: 24 * time.Hour, steps: []time.Duration{0, 23 * time.Hour, 45 * time.Minute, 6 * time.Minute}, wantLogin: []int{1, 1, 1, 2}},
		// Short tokens are renewed at half-life.
		{name: "10m token", lifetime: 10 * time.Minute, steps: []time.Duration{0, 4 * time.Minute, time.Minute, time.Minute}, wantLogin: []int{1, 1, 2, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &clock{t: time.Now()}
			// The fake judges expiry by its own clock, the client by the
			// injected one: renewal must come from the client.
			s := upgradetest.NewServer(t, upgradetest.WithIAMUser(testDomain, testUser, testPassword), upgradetest.WithTokenLifetime(tt.lifetime), upgradetest.WithClock(clk.Now))
			c := newIAMClient(t, s, clk.Now)
			for i, d := range tt.steps {
				clk.Add(d)
				if _, err := c.ListInstances(context.Background(), upgrade.ListOptions{}); err != nil {
					t.Fatalf("call %d: %v", i, err)
				}
				if got := s.Logins(); got != tt.wantLogin[i] {
					t.Errorf("after call %d (clock +%v): got %d logins, want %d", i, d, got, tt.wantLogin[i])
				}
			}
			if n := s.Calls("/instances"); n != len(tt.steps) {
				t.Errorf("got %d list calls, want %d (no 401s)", n, len(tt.steps))
			}
		})
	}
}

func TestIAMOneLoginUnderConcurrency(t *testing.T) {
	s := upgradetest.NewServer(t, upgradetest.WithIAMUser(testDomain, testUser, testPassword))
	s.SetDelay("/v3/auth/tokens", 50*time.Millisecond)
	var mu sync.Mutex
	observed := map[string]int{}
	c := newIAMClient(t, s, nil, upgrade.WithObserver(func(call string, _ time.Duration, _ error) {
		mu.Lock()
		observed[call]++
		mu.Unlock()
	}))
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for range 50 {
		wg.Go(func() {
			if _, err := c.ListInstances(context.Background(), upgrade.ListOptions{}); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("ListInstances: %v", err)
	}
	if got := s.Logins(); got != 1 {
		t.Errorf("got %d logins, want 1", got)
	}
	if got := s.Calls("/v3/auth/tokens"); got != 1 {
		t.Errorf("got %d login calls, want 1", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if observed[upgrade.CallIAMLogin] != 1 || observed[upgrade.CallListInstances] != 50 {
		t.Errorf("got observed %v, want 1 iam_login and 50 list_instances", observed)
	}
}

func TestIAMRenewOn401(t *testing.T) {
	s := upgradetest.NewServer(t, upgradetest.WithIAMUser(testDomain, testUser, testPassword))
	in := upgradetest.NewInstance("c", "cassandra")
	s.AddInstance(in)
	clk := &clock{t: time.Now()}
	c := newIAMClient(t, s, nil, upgrade.WithClock(clk.Now))
	ctx := context.Background()
	if _, err := c.ListInstances(ctx, upgrade.ListOptions{}); err != nil {
		t.Fatalf("first call: %v", err)
	}

	t.Run("read is renewed and retried once", func(t *testing.T) {
		s.RevokeTokens()
		before := s.Calls("/instances")
		page, err := c.ListInstances(ctx, upgrade.ListOptions{})
		if err != nil {
			t.Fatalf("ListInstances after revocation: %v", err)
		}
		if len(page.Instances) != 1 {
			t.Errorf("got %d instances, want 1", len(page.Instances))
		}
		if got := s.Logins(); got != 2 {
			t.Errorf("got %d logins, want 2", got)
		}
		if got := s.Calls("/instances") - before; got != 2 {
			t.Errorf("got %d list calls, want 2 (401, then retry)", got)
		}
	})

	t.Run("persistent 401 is retried only once", func(t *testing.T) {
		s.FailNext("/instances", 401, "APIG.0301", "Incorrect IAM authentication information: verify token failed", 2)
		before := s.Calls("/instances")
		_, err := c.ListInstances(ctx, upgrade.ListOptions{})
		if ae := apiError(t, err); ae.Status != 401 {
			t.Errorf("got status %d, want 401", ae.Status)
		}
		if got := s.Calls("/instances") - before; got != 2 {
			t.Errorf("got %d list calls, want 2", got)
		}
		// A 401 that survives the renewal is a credential failure: the
		// next call is not sent.
		_, err = c.ListInstances(ctx, upgrade.ListOptions{})
		var be *upgrade.AuthBackoffError
		if !errors.As(err, &be) {
			t.Errorf("got %v, want an *upgrade.AuthBackoffError", err)
		}
		if got := s.Calls("/instances") - before; got != 2 {
			t.Errorf("got %d list calls, want still 2", got)
		}
	})

	t.Run("batch is never resent", func(t *testing.T) {
		clk.Add(upgrade.DefaultAuthBackoff) // end the backoff of the previous subtest
		s.RevokeTokens()
		logins := s.Logins()
		_, err := c.BatchUpgrade(ctx, []string{in.ID})
		if ae := apiError(t, err); ae.Status != 401 || ae.Code != "APIG.0301" {
			t.Errorf("got %d %s, want 401 APIG.0301", ae.Status, ae.Code)
		}
		if got := s.Calls("/instances/db-upgrade"); got != 1 {
			t.Errorf("got %d batch calls, want 1", got)
		}
		if got := s.Logins(); got != logins {
			t.Errorf("got %d logins, want %d (no renewal for a POST)", got, logins)
		}
	})
}

func TestIAMLoginRetried(t *testing.T) {
	s := upgradetest.NewServer(t, upgradetest.WithIAMUser(testDomain, testUser, testPassword))
	s.FailNext("/v3/auth/tokens", 503, "APIG.0201", "Backend unavailable.", 2)
	c := newIAMClient(t, s, nil)
	if _, err := c.ListInstances(context.Background(), upgrade.ListOptions{}); err != nil {
		t.Fatalf("ListInstances: %v", err)
	}
	if got := s.Calls("/v3/auth/tokens"); got != 3 {
		t.Errorf("got %d login calls, want 3", got)
	}
}

func TestReadRetries(t *testing.T) {
	tests := []struct {
		name       string
		path       string
		status     int
		code       string
		failures   int
		call       func(c *upgrade.Client, jobID string) error
		wantErr    bool
		wantStatus int
		wantCalls  int
	}{
		{name: "429 then success", path: "/instances", status: 429, code: "APIG.0308", failures: 2, call: list, wantCalls: 3},
		{name: "503 then success", path: "/instances", status: 503, code: "DBS.200998", failures: 3, call: list, wantCalls: 4},
		{name: "503 gives up", path: "/instances", status: 503, code: "DBS.200998", failures: 10, call: list, wantErr: true, wantStatus: 503, wantCalls: 4},
		{name: "500 job then success", path: "/jobs", status: 500, code: "DBS.280005", failures: 1, call: job, wantCalls: 2},
		{name: "429 job gives up", path: "/jobs", status: 429, code: "DBS.280443", failures: 10, call: job, wantErr: true, wantStatus: 429, wantCalls: 4},
		{name: "400 not retried", path: "/instances", status: 400, code: "DBS.200001", failures: 10, call: list, wantErr: true, wantStatus: 400, wantCalls: 1},
		{name: "403 not retried", path: "/jobs", status: 403, code: "DBS.280032", failures: 10, call: job, wantErr: true, wantStatus: 403, wantCalls: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := upgradetest.NewServer(t, upgradetest.WithToken(testToken))
			s.SetJob("job-1", upgrade.JobRunning, "5%", "")
			c := newTokenClient(t, s)
			s.FailNext(tt.path, tt.status, tt.code, "injected", tt.failures)
			err := tt.call(c, "job-1")
			if got := s.Calls(tt.path); got != tt.wantCalls {
				t.Errorf("got %d calls, want %d", got, tt.wantCalls)
			}
			if !tt.wantErr {
				if err != nil {
					t.Errorf("got error %v, want none", err)
				}
				return
			}
			ae := apiError(t, err)
			if ae.Status != tt.wantStatus || ae.Code != tt.code || ae.Message != "injected" {
				t.Errorf("got %d %s %q, want %d %s \"injected\"", ae.Status, ae.Code, ae.Message, tt.wantStatus, tt.code)
			}
		})
	}
}

func list(c *upgrade.Client, _ string) error {
	_, err := c.ListInstances(context.Background(), upgrade.ListOptions{})
	return err
}

func job(c *upgrade.Client, id string) error {
	_, err := c.Job(context.Background(), id)
	return err
}

func TestBatchNeverRetried(t *testing.T) {
	for _, status := range []int{500, 502, 503, 429, 401} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			t.Parallel()
			s := upgradetest.NewServer(t, upgradetest.WithToken(testToken))
			in := upgradetest.NewInstance("c", "cassandra")
			s.AddInstance(in)
			c := newTokenClient(t, s)
			s.FailNext("/instances/db-upgrade", status, "DBS.200998", "System busy.", 5)
			_, err := c.BatchUpgrade(context.Background(), []string{in.ID})
			if ae := apiError(t, err); ae.Status != status {
				t.Errorf("got status %d, want %d", ae.Status, status)
			}
			if got := s.Calls("/instances/db-upgrade"); got != 1 {
				t.Errorf("got %d batch calls, want exactly 1", got)
			}
		})
	}
	t.Run("connection error", func(t *testing.T) {
		var attempts int
		hc := &http.Client{Transport: rtFunc(func(r *http.Request) (*http.Response, error) {
			attempts++
			return nil, errors.New("connection reset by peer")
		})}
		c, err := upgrade.NewClient("http://127.0.0.1:1", "p", upgrade.TokenAuth(testToken), upgrade.WithHTTPClient(hc), fastRetry)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.BatchUpgrade(context.Background(), []string{"a"})
		if err == nil || !strings.Contains(err.Error(), "batch upgrade 1 instances") || !strings.Contains(err.Error(), "may have reached the API") {
			t.Errorf("got %v, want a batch error saying the outcome is unknown", err)
		}
		if attempts != 1 {
			t.Errorf("got %d attempts, want 1", attempts)
		}
		assertNoSecret(t, err)
	})
}

func TestReadRetriesConnectionErrors(t *testing.T) {
	s := upgradetest.NewServer(t, upgradetest.WithToken(testToken))
	var attempts int
	hc := &http.Client{Transport: rtFunc(func(r *http.Request) (*http.Response, error) {
		attempts++
		if attempts <= 2 {
			return nil, errors.New("connection refused")
		}
		return http.DefaultTransport.RoundTrip(r)
	})}
	c := newTokenClient(t, s, upgrade.WithHTTPClient(hc))
	if _, err := c.ListInstances(context.Background(), upgrade.ListOptions{}); err != nil {
		t.Fatalf("ListInstances: %v", err)
	}
	if attempts != 3 {
		t.Errorf("got %d attempts, want 3", attempts)
	}
}

func TestCallTimeoutRetried(t *testing.T) {
	s := upgradetest.NewServer(t, upgradetest.WithToken(testToken))
	s.SetDelay("/instances", time.Second)
	c := newTokenClient(t, s, upgrade.WithCallTimeout(20*time.Millisecond),
		upgrade.WithRetry(upgrade.RetryPolicy{MaxAttempts: 2, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond, Deadline: time.Second}))
	_, err := c.ListInstances(context.Background(), upgrade.ListOptions{})
	if err == nil || !strings.Contains(err.Error(), "no answer in time") {
		t.Errorf("got %v, want a timeout error", err)
	}
	if got := s.Calls("/instances"); got != 2 {
		t.Errorf("got %d calls, want 2", got)
	}
}

func TestContextCancelled(t *testing.T) {
	tests := []struct {
		name string
		path string
		auth func(s *upgradetest.Server) upgrade.Authenticator
		call func(ctx context.Context, c *upgrade.Client) error
	}{
		{
			name: "list", path: "/instances",
			auth: func(*upgradetest.Server) upgrade.Authenticator { return upgrade.TokenAuth(testToken) },
			call: func(ctx context.Context, c *upgrade.Client) error {
				_, err := c.ListInstances(ctx, upgrade.ListOptions{})
				return err
			},
		},
		{
			name: "batch", path: "/db-upgrade",
			auth: func(*upgradetest.Server) upgrade.Authenticator { return upgrade.TokenAuth(testToken) },
			call: func(ctx context.Context, c *upgrade.Client) error {
				_, err := c.BatchUpgrade(ctx, []string{"x"})
				return err
			},
		},
		{
			name: "during iam login", path: "/v3/auth/tokens",
			auth: func(s *upgradetest.Server) upgrade.Authenticator {
				return upgrade.NewIAMAuth(upgrade.IAMConfig{Endpoint: s.IAMURL, Username: testUser, Password: testPassword, Domain: testDomain, ProjectID: s.ProjectID})
			},
			call: func(ctx context.Context, c *upgrade.Client) error { _, err := c.Job(ctx, "j"); return err },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := upgradetest.NewServer(t, upgradetest.WithToken(testToken), upgradetest.WithIAMUser(testDomain, testUser, testPassword))
			s.SetDelay(tt.path, 5*time.Second)
			c, err := upgrade.NewClient(s.URL, s.ProjectID, tt.auth(s), fastRetry)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(50*time.Millisecond, cancel)
			start := time.Now()
			err = tt.call(ctx, c)
			if !errors.Is(err, context.Canceled) {
				t.Errorf("got %v, want context.Canceled", err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("got return after %v, want promptly", d)
			}
			if err != nil && strings.Contains(err.Error(), "may have reached") {
				t.Errorf("got %q, want the cancellation, not a transport message", err)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	s := upgradetest.NewServer(t, upgradetest.WithToken(testToken))
	a := upgradetest.NewInstance("alpha", "cassandra")
	b1 := upgradetest.NewInstance("twin", "cassandra")
	b2 := upgradetest.NewInstance("twin", "influxdb")
	s.AddInstance(a)
	s.AddInstance(b1)
	s.AddInstance(b2)
	wantTwins := []string{b1.ID, b2.ID}
	slices.Sort(wantTwins)
	tests := []struct {
		name          string
		refs          []string
		wantFound     map[string]string // ref → ID
		wantMissing   []string
		wantAmbiguous map[string][]string
	}{
		{name: "unique name", refs: []string{"alpha"}, wantFound: map[string]string{"alpha": a.ID}},
		{name: "by ID", refs: []string{a.ID}, wantFound: map[string]string{a.ID: a.ID}},
		{name: "ambiguous name", refs: []string{"twin"}, wantAmbiguous: map[string][]string{"twin": wantTwins}},
		{name: "missing name", refs: []string{"nope"}, wantMissing: []string{"nope"}},
		{name: "missing ID", refs: []string{"ffffffffffffffffffffffffffffffffin06"}, wantMissing: []string{"ffffffffffffffffffffffffffffffffin06"}},
		{name: "fuzzy pattern never sent", refs: []string{"*lph"}, wantMissing: []string{"*lph"}},
		{
			name: "mixed", refs: []string{"nope", "alpha", "twin", b1.ID, "alpha", " "},
			wantFound:     map[string]string{"alpha": a.ID, b1.ID: b1.ID},
			wantMissing:   []string{"nope"},
			wantAmbiguous: map[string][]string{"twin": wantTwins},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTokenClient(t, s)
			res, err := c.Resolve(context.Background(), tt.refs)
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if len(res.Found) != len(tt.wantFound) {
				t.Errorf("got found %v, want %v", res.Found, tt.wantFound)
			}
			for ref, id := range tt.wantFound {
				if res.Found[ref].ID != id {
					t.Errorf("got %q → %q, want %q", ref, res.Found[ref].ID, id)
				}
			}
			if !slices.Equal(res.Missing, tt.wantMissing) {
				t.Errorf("got missing %v, want %v", res.Missing, tt.wantMissing)
			}
			if len(res.Ambiguous) != len(tt.wantAmbiguous) {
				t.Errorf("got ambiguous %v, want %v", res.Ambiguous, tt.wantAmbiguous)
			}
			for name, ids := range tt.wantAmbiguous {
				if !slices.Equal(res.Ambiguous[name], ids) {
					t.Errorf("got ambiguous %q → %v, want %v", name, res.Ambiguous[name], ids)
				}
			}
		})
	}
	t.Run("fuzzy pattern costs no call", func(t *testing.T) {
		c := newTokenClient(t, s)
		before := s.Calls("/instances")
		if _, err := c.Resolve(context.Background(), []string{"*a"}); err != nil {
			t.Fatal(err)
		}
		if got := s.Calls("/instances") - before; got != 0 {
			t.Errorf("got %d calls, want 0", got)
		}
	})
}

func TestResolveCost(t *testing.T) {
	s := upgradetest.NewServer(t, upgradetest.WithToken(testToken))
	var all []upgrade.Instance
	for i := range 250 {
		engine := "cassandra"
		if i%2 == 1 {
			engine = "influxdb"
		}
		in := upgradetest.NewInstance(fmt.Sprintf("db-%03d", i), engine)
		all = append(all, in)
		s.AddInstance(in)
	}
	// A duplicate name on the last page: found only when paging is complete.
	dup := upgradetest.NewInstance("db-007", "cassandra")
	s.AddInstance(dup)
	const fleetPages = 3 // 251 instances
	tests := []struct {
		name     string
		warm     bool // whether the client already knows the fleet size
		refs     []string
		maxCalls int
	}{
		{name: "one name", refs: []string{"db-200"}, maxCalls: 1},
		{name: "one ID", refs: []string{all[240].ID}, maxCalls: 1},
		{name: "two refs, warm", warm: true, refs: []string{"db-200", all[3].ID}, maxCalls: 2},
		{name: "three refs", refs: []string{"db-200", "db-007", all[120].ID}, maxCalls: fleetPages},
		{name: "five refs", refs: []string{"db-001", "db-150", "db-249", "db-007", "missing"}, maxCalls: fleetPages},
		{name: "twelve refs, warm", warm: true, refs: []string{"db-001", "db-002", "db-003", "db-004", "db-005", "db-006", "db-007", "db-008", "db-009", "db-010", "db-011", "db-012"}, maxCalls: fleetPages},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTokenClient(t, s)
			if tt.warm {
				if _, err := c.ListInstances(context.Background(), upgrade.ListOptions{Limit: 1}); err != nil {
					t.Fatal(err)
				}
			}
			before := s.Calls("/instances")
			res, err := c.Resolve(context.Background(), tt.refs)
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			calls := s.Calls("/instances") - before
			if want := min(len(tt.refs), fleetPages); calls > want || calls > tt.maxCalls {
				t.Errorf("got %d list calls, want ≤ %d", calls, min(want, tt.maxCalls))
			}
			for _, ref := range tt.refs {
				_, f := res.Found[ref]
				_, a := res.Ambiguous[ref]
				m := slices.Contains(res.Missing, ref)
				switch {
				case ref == "db-007":
					if !a {
						t.Errorf("got %q not ambiguous, want ambiguous (two instances)", ref)
					}
				case ref == "missing":
					if !m {
						t.Errorf("got %q not missing, want missing", ref)
					}
				case !f:
					t.Errorf("got %q not found, want found", ref)
				}
			}
		})
	}
}

func TestAllInstances(t *testing.T) {
	s := upgradetest.NewServer(t, upgradetest.WithToken(testToken))
	for i := range 230 {
		engine := "cassandra"
		if i%10 == 0 {
			engine = "influxdb"
		}
		s.AddInstance(upgradetest.NewInstance(fmt.Sprintf("db-%03d", i), engine))
	}
	c := newTokenClient(t, s)
	tests := []struct {
		engine    string
		want      int
		wantCalls int
	}{
		{"", 230, 3},
		{"cassandra", 207, 3},
		{"influxdb", 23, 1},
		{"redis", 0, 1},
	}
	for _, tt := range tests {
		t.Run("engine="+tt.engine, func(t *testing.T) {
			before := s.Calls("/instances")
			got, err := c.AllInstances(context.Background(), tt.engine)
			if err != nil {
				t.Fatalf("AllInstances: %v", err)
			}
			if len(got) != tt.want {
				t.Errorf("got %d instances, want %d", len(got), tt.want)
			}
			if calls := s.Calls("/instances") - before; calls != tt.wantCalls {
				t.Errorf("got %d calls, want %d", calls, tt.wantCalls)
			}
		})
	}
}

func TestListInstancesValidation(t *testing.T) {
	s := upgradetest.NewServer(t, upgradetest.WithToken(testToken))
	c := newTokenClient(t, s)
	for name, o := range map[string]upgrade.ListOptions{
		"fuzzy name":      {Name: "*db"},
		"negative offset": {Offset: -1},
		"limit too big":   {Limit: 101},
		"negative limit":  {Limit: -5},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := c.ListInstances(context.Background(), o); err == nil {
				t.Errorf("got nil error, want one")
			}
		})
	}
	if got := s.Calls("/instances"); got != 0 {
		t.Errorf("got %d calls, want 0", got)
	}
}

func TestJobNotFound(t *testing.T) {
	s := upgradetest.NewServer(t, upgradetest.WithToken(testToken))
	c := newTokenClient(t, s)
	_, err := c.Job(context.Background(), "6fa4c1ab-0000-4000-8000-000000000000")
	if !errors.Is(err, upgrade.ErrJobNotFound) {
		t.Errorf("got %v, want ErrJobNotFound", err)
	}
	if err != nil && !strings.Contains(err.Error(), "6fa4c1ab-0000-4000-8000-000000000000") {
		t.Errorf("got %q, want it to name the job", err)
	}
	s.SetJob("j-failed", upgrade.JobFailed, "", "disk full")
	j, err := c.Job(context.Background(), "j-failed")
	if err != nil {
		t.Fatalf("Job: %v", err)
	}
	if j.Status != upgrade.JobFailed || j.FailReason != "disk full" || j.Ended.IsZero() {
		t.Errorf("got %+v, want Failed with reason and end time", j)
	}
}

func TestFakeGateway(t *testing.T) {
	s := upgradetest.NewServer(t, upgradetest.WithToken(testToken))
	tests := []struct {
		name       string
		method     string
		path       string
		token      string
		wantStatus int
		wantCode   string
	}{
		{"unknown path", "GET", "/v3/" + s.ProjectID + "/nothing", testToken, 404, "APIG.0101"},
		{"wrong method", "DELETE", "/v3/" + s.ProjectID + "/instances", testToken, 404, "APIG.0101"},
		{"wrong project", "GET", "/v3/0000/instances", testToken, 400, "DBS.200604"},
		{"no token", "GET", "/v3/" + s.ProjectID + "/instances", "", 401, "APIG.0301"},
		{"bad limit", "GET", "/v3/" + s.ProjectID + "/instances?limit=0", testToken, 400, "DBS.200001"},
		{"bad offset", "GET", "/v3/" + s.ProjectID + "/instances?offset=-1", testToken, 400, "DBS.200001"},
		{"empty batch", "POST", "/v3/" + s.ProjectID + "/instances/db-upgrade", testToken, 400, "DBS.280001"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := strings.NewReader("")
			if tt.method == "POST" {
				body = strings.NewReader(`{"instance_ids":[]}`)
			}
			req, _ := http.NewRequest(tt.method, s.URL+tt.path, body)
			if tt.token != "" {
				req.Header.Set("X-Auth-Token", tt.token)
			}
			resp, err := s.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var e struct {
				Code string `json:"error_code"`
				Msg  string `json:"error_msg"`
			}
			_ = jsonDecode(resp, &e)
			if resp.StatusCode != tt.wantStatus || e.Code != tt.wantCode || e.Msg == "" {
				t.Errorf("got %d %s %q, want %d %s with a message", resp.StatusCode, e.Code, e.Msg, tt.wantStatus, tt.wantCode)
			}
		})
	}
}

func TestNewClientValidation(t *testing.T) {
	tests := []struct {
		name, url, project string
		auth               upgrade.Authenticator
	}{
		{"no scheme", "gaussdb.example.com", "p", upgrade.TokenAuth("t")},
		{"ftp", "ftp://x", "p", upgrade.TokenAuth("t")},
		{"no project", "https://x", "", upgrade.TokenAuth("t")},
		{"slash in project", "https://x", "a/b", upgrade.TokenAuth("t")},
		{"no auth", "https://x", "p", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := upgrade.NewClient(tt.url, tt.project, tt.auth); err == nil {
				t.Errorf("got nil error, want one")
			}
		})
	}
}

func TestPlanEndToEnd(t *testing.T) {
	s := upgradetest.NewServer(t, upgradetest.WithToken(testToken))
	a := upgradetest.NewInstance("a", "cassandra")
	b := upgradetest.NewInstance("b", "mongodb")
	s.AddInstance(a)
	s.AddInstance(b)
	c := newTokenClient(t, s)
	p, err := c.Plan(context.Background(), []string{"a", "b", "c", a.ID}, upgrade.PlanOptions{Now: time.Now()})
	if err != nil {
		t.Fatalf("Plan: %v", err)
	}
	if len(p.Targets) != 1 || p.Targets[0].Instance.ID != a.ID {
		t.Errorf("got targets %+v, want only %s", p.Targets, a.ID)
	}
	if len(p.Skipped) != 2 {
		t.Errorf("got %d skipped, want 2 (mongodb, missing)", len(p.Skipped))
	}
	if len(p.Batches) != 1 || !slices.Equal(p.Batches[0].InstanceIDs, []string{a.ID}) {
		t.Errorf("got batches %+v, want one with %s", p.Batches, a.ID)
	}
	all, err := c.AllInstances(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	cur := map[string]upgrade.Instance{}
	for _, in := range all {
		cur[in.ID] = in
	}
	if d := p.Drift(cur); len(d) != 0 {
		t.Errorf("got drift %q, want none", d)
	}
	s.SetInstance(a.ID, func(in *upgrade.Instance) { in.Actions = []string{"REBOOT"} })
	all, _ = c.AllInstances(context.Background(), "")
	for _, in := range all {
		cur[in.ID] = in
	}
	if d := p.Drift(cur); len(d) != 1 || !strings.Contains(d[0], "REBOOT") {
		t.Errorf("got drift %q, want one sentence naming REBOOT", d)
	}
}
