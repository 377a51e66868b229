package upgrade_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade/upgradetest"
)

// requests counts every request the fake received, whatever its path.
func requests(s *upgradetest.Server) int { return s.Calls("") }

// wantBackoff checks that err is a refusal without I/O that still carries
// the 401 APIG.0301 for the bot to show, and names the call.
func wantBackoff(t *testing.T, err error, call string, retryAt time.Time) {
	t.Helper()
	assertNoSecret(t, err)
	var be *upgrade.AuthBackoffError
	if !errors.As(err, &be) {
		t.Fatalf("got %v (%T), want an *upgrade.AuthBackoffError", err, err)
	}
	if ae := apiError(t, err); ae.Status != http.StatusUnauthorized || ae.Code != "APIG.0301" {
		t.Errorf("got %d %s, want 401 APIG.0301", ae.Status, ae.Code)
	}
	if !be.RetryAt.Equal(retryAt) {
		t.Errorf("got RetryAt %v, want %v", be.RetryAt, retryAt)
	}
	for _, want := range []string{call + ": authentication failed at ", "APIG.0301", "not trying again before " + retryAt.UTC().Format("15:04:05") + " UTC"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got %q, want it to contain %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "may have reached the API") {
		t.Errorf("got %q, but a refused call reached nothing", err)
	}
}

func TestAuthBackoffAKSK(t *testing.T) {
	clk := &clock{t: time.Date(2026, 3, 12, 10, 2, 3, 0, time.UTC)}
	s := upgradetest.NewServer(t, upgradetest.WithAKSK(testAK, testSK))
	in := upgradetest.NewInstance("c", "cassandra")
	s.AddInstance(in)
	s.SetJob("job-1", upgrade.JobRunning, "5%", "")
	var mu sync.Mutex
	var observed []error
	c, err := upgrade.NewClient(s.URL, s.ProjectID, upgrade.AKSKAuth(testAK, testSK+"x"), fastRetry,
		upgrade.WithClock(clk.Now), upgrade.WithAuthBackoff(2*time.Minute),
		upgrade.WithObserver(func(_ string, _ time.Duration, err error) {
			mu.Lock()
			observed = append(observed, err)
			mu.Unlock()
		}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	_, err = c.ListInstances(ctx, upgrade.ListOptions{})
	if ae := apiError(t, err); ae.Status != http.StatusUnauthorized || ae.Code != "APIG.0301" {
		t.Fatalf("got %d %s, want 401 APIG.0301", ae.Status, ae.Code)
	}
	if n := requests(s); n != 1 {
		t.Fatalf("got %d requests, want 1", n)
	}
	retryAt := clk.Now().Add(2 * time.Minute)

	calls := []struct {
		name string
		call func() error
	}{
		{"list instances", func() error { _, err := c.ListInstances(ctx, upgrade.ListOptions{}); return err }},
		{"job job-1", func() error { _, err := c.Job(ctx, "job-1"); return err }},
		{"batch upgrade 1 instances", func() error { _, err := c.BatchUpgrade(ctx, []string{in.ID}); return err }},
		{"list instances", func() error { _, err := c.AllInstances(ctx, ""); return err }},
		{"list instances", func() error { _, err := c.Resolve(ctx, []string{in.ID}); return err }},
	}
	for i, cl := range calls {
		if i > 0 {
			clk.Add(20 * time.Second)
		}
		wantBackoff(t, cl.call(), cl.name, retryAt)
	}
	if n := requests(s); n != 1 {
		t.Errorf("got %d requests during the backoff, want still 1", n)
	}
	if n := s.Calls("/instances/db-upgrade"); n != 0 {
		t.Errorf("got %d batch calls, want none", n)
	}
	mu.Lock()
	if len(observed) != 6 {
		t.Errorf("observer saw %d calls, want 6 (refused ones included)", len(observed))
	}
	mu.Unlock()

	// Past the backoff one call is sent; another 401 starts a new backoff.
	clk.Add(2*time.Minute - 80*time.Second)
	_, err = c.ListInstances(ctx, upgrade.ListOptions{})
	var be *upgrade.AuthBackoffError
	if errors.As(err, &be) {
		t.Fatalf("got %v after the backoff, want a sent call", err)
	}
	if ae := apiError(t, err); ae.Status != http.StatusUnauthorized {
		t.Fatalf("got status %d, want 401", ae.Status)
	}
	if n := requests(s); n != 2 {
		t.Fatalf("got %d requests, want 2", n)
	}
	retryAt = clk.Now().Add(2 * time.Minute)
	wantBackoff(t, func() error { _, err := c.Job(ctx, "job-1"); return err }(), "job job-1", retryAt)
	if n := requests(s); n != 2 {
		t.Fatalf("got %d requests, want still 2", n)
	}

	// The key is fixed (here: the fake now accepts it): the probe succeeds
	// and every later call is sent again.
	s.SetAKSK(testAK, testSK+"x")
	clk.Add(2 * time.Minute)
	if _, err := c.ListInstances(ctx, upgrade.ListOptions{}); err != nil {
		t.Fatalf("probe with accepted keys: %v", err)
	}
	// Cleared, not merely due: concurrent calls are all sent, not one at a time.
	s.SetDelay("/jobs", 20*time.Millisecond)
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() {
			if _, err := c.Job(ctx, "job-1"); err != nil {
				t.Errorf("call %d after recovery: %v", i, err)
			}
		})
	}
	wg.Wait()
	if n := requests(s); n != 13 {
		t.Errorf("got %d requests, want 13", n)
	}
}

func TestAuthBackoffIAMLogin(t *testing.T) {
	clk := &clock{t: time.Date(2026, 3, 12, 23, 59, 30, 0, time.UTC)}
	s := upgradetest.NewServer(t, upgradetest.WithIAMUser(testDomain, testUser, testPassword))
	auth := upgrade.NewIAMAuth(upgrade.IAMConfig{Endpoint: s.IAMURL, Username: testUser, Password: testPassword + "x", Domain: testDomain, ProjectID: s.ProjectID})
	c, err := upgrade.NewClient(s.URL, s.ProjectID, auth, fastRetry, upgrade.WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, err = c.ListInstances(ctx, upgrade.ListOptions{})
	if ae := apiError(t, err); ae.Status != http.StatusUnauthorized || ae.Code != "APIG.0301" {
		t.Fatalf("got %d %s, want 401 APIG.0301", ae.Status, ae.Code)
	}
	retryAt := clk.Now().Add(upgrade.DefaultAuthBackoff)
	for range 5 {
		clk.Add(10 * time.Second)
		_, err := c.ListInstances(ctx, upgrade.ListOptions{})
		wantBackoff(t, err, "list instances", retryAt)
	}
	if n := s.Calls("/v3/auth/tokens"); n != 1 {
		t.Errorf("got %d login attempts, want 1", n)
	}
	if n := s.Logins(); n != 0 {
		t.Errorf("got %d successful logins, want 0", n)
	}
	if n := s.Calls("/instances"); n != 0 {
		t.Errorf("got %d list calls, want 0", n)
	}
	clk.Add(10 * time.Second)
	_, err = c.ListInstances(ctx, upgrade.ListOptions{})
	if ae := apiError(t, err); ae.Status != http.StatusUnauthorized {
		t.Errorf("got status %d, want 401", ae.Status)
	}
	if n := s.Calls("/v3/auth/tokens"); n != 2 {
		t.Errorf("got %d login attempts after the backoff, want 2", n)
	}
}

// A revoked token is renewed within the call: not a credential failure.
func TestAuthBackoffNotArmedByStaleToken(t *testing.T) {
	s := upgradetest.NewServer(t, upgradetest.WithIAMUser(testDomain, testUser, testPassword))
	c := newIAMClient(t, s, nil)
	ctx := context.Background()
	if _, err := c.ListInstances(ctx, upgrade.ListOptions{}); err != nil {
		t.Fatalf("first call: %v", err)
	}
	for i := range 3 {
		s.RevokeTokens()
		if _, err := c.ListInstances(ctx, upgrade.ListOptions{}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if n := s.Calls("/instances"); n != 7 {
		t.Errorf("got %d list calls, want 7 (then a 401 and a retry each time)", n)
	}
}

func TestAuthBackoffOnly401(t *testing.T) {
	tests := []struct {
		status   int
		code     string
		failures int
	}{
		{http.StatusForbidden, "DBS.280032", 1},
		{http.StatusForbidden, "DBS.280056", 1},
		{http.StatusTooManyRequests, "APIG.0308", 4},
		{http.StatusServiceUnavailable, "DBS.200998", 4},
		{http.StatusNotFound, "APIG.0101", 1},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			t.Parallel()
			s := upgradetest.NewServer(t, upgradetest.WithToken(testToken))
			c := newTokenClient(t, s)
			s.FailNext("/instances", tt.status, tt.code, "injected", tt.failures)
			_, err := c.ListInstances(context.Background(), upgrade.ListOptions{})
			if ae := apiError(t, err); ae.Status != tt.status {
				t.Fatalf("got status %d, want %d", ae.Status, tt.status)
			}
			before := s.Calls("/instances")
			if _, err := c.ListInstances(context.Background(), upgrade.ListOptions{}); err != nil {
				t.Errorf("next call: %v, want it sent and answered", err)
			}
			if n := s.Calls("/instances") - before; n != 1 {
				t.Errorf("got %d requests for the next call, want 1", n)
			}
		})
	}
}

func TestAuthBackoffConcurrent(t *testing.T) {
	clk := &clock{t: time.Now()}
	s := upgradetest.NewServer(t, upgradetest.WithToken(testToken))
	c, err := upgrade.NewClient(s.URL, s.ProjectID, upgrade.TokenAuth(testToken+"x"), fastRetry, upgrade.WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	run := func() (backoffs, unauthorized int) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		for range 50 {
			wg.Go(func() {
				_, err := c.ListInstances(context.Background(), upgrade.ListOptions{})
				var be *upgrade.AuthBackoffError
				var ae *upgrade.APIError
				mu.Lock()
				defer mu.Unlock()
				switch {
				case errors.As(err, &be):
					backoffs++
				case errors.As(err, &ae) && ae.Status == http.StatusUnauthorized:
					unauthorized++
				default:
					t.Errorf("got %v, want a 401 or a backoff", err)
				}
			})
		}
		wg.Wait()
		return backoffs, unauthorized
	}
	if _, err := c.ListInstances(context.Background(), upgrade.ListOptions{}); err == nil {
		t.Fatal("wrong token accepted")
	}
	if b, u := run(); b != 50 || u != 0 {
		t.Errorf("during the backoff: got %d backoffs and %d 401s, want 50 and 0", b, u)
	}
	if n := requests(s); n != 1 {
		t.Errorf("got %d requests, want 1", n)
	}
	// After the backoff exactly one call probes; the others wait for no one.
	clk.Add(upgrade.DefaultAuthBackoff)
	s.SetDelay("/instances", 50*time.Millisecond)
	if b, u := run(); b != 49 || u != 1 {
		t.Errorf("after the backoff: got %d backoffs and %d 401s, want 49 and 1", b, u)
	}
	if n := requests(s); n != 2 {
		t.Errorf("got %d requests, want 2", n)
	}
}
