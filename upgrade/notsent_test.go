package upgrade_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade/upgradetest"
)

const someID = "046287aae57843b1a7bc61b7a8812f41in13"

// closedURL returns the URL of a local port nothing listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return "http://" + addr
}

// countingServer serves h and counts the requests that reach it.
func countingServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		go func() {
			select {
			case <-stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		h(w, r.WithContext(ctx))
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(stop) }) // runs first: lets hanging handlers end
	return srv, &n
}

// hang reads the request and answers nothing until the client or the test gives up.
func hang(_ http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	<-r.Context().Done()
}

// hangUp reads the request, then closes the connection without an answer.
func hangUp(w http.ResponseWriter, _ *http.Request) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err == nil {
		_ = conn.Close()
	}
}

// noDNS is a client whose resolver fails every lookup, like a DNS outage.
func noDNS() *http.Client {
	d := &net.Dialer{Resolver: &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("no DNS server reachable")
	}}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
}

// outcome is how a failed call is classified.
type outcome int

const (
	notSent  outcome = iota // certainly nothing reached the API
	unknown                 // may have reached the API, no answer
	answered                // the API (or something at its address) answered
)

func (o outcome) String() string { return [...]string{"not sent", "unknown", "answered"}[o] }

func classify(err error) outcome {
	var ae *upgrade.APIError
	var re *upgrade.RedirectError
	switch {
	case upgrade.NotSent(err):
		return notSent
	case errors.As(err, &ae), errors.As(err, &re):
		return answered
	default:
		return unknown
	}
}

func TestNotSent(t *testing.T) {
	batch := func(ctx context.Context, c *upgrade.Client) error {
		_, err := c.BatchUpgrade(ctx, []string{someID})
		return err
	}
	list := func(ctx context.Context, c *upgrade.Client) error {
		_, err := c.ListInstances(ctx, upgrade.ListOptions{})
		return err
	}
	job := func(ctx context.Context, c *upgrade.Client) error { _, err := c.Job(ctx, "j-1"); return err }
	type env struct {
		url  string     // API base URL
		hits func() int // requests that reached the API, -1 when unknowable
		auth upgrade.Authenticator
		opts []upgrade.Option
		ctx  context.Context
	}
	tokenEnv := func(url string, hits func() int, opts ...upgrade.Option) env {
		return env{url: url, hits: hits, auth: upgrade.TokenAuth(testToken), opts: opts, ctx: context.Background()}
	}
	none := func() int { return 0 }
	tests := []struct {
		name   string
		setup  func(t *testing.T) env
		call   func(ctx context.Context, c *upgrade.Client) error
		want   outcome
		wantAs any    // an error type errors.As must find, as a pointer to a pointer
		wantIn string // a substring of the error
		wantIs error  // an error errors.Is must find
	}{
		{name: "dial refused, batch", call: batch, want: notSent, wantAs: new(*net.OpError), wantIn: "connection refused",
			setup: func(t *testing.T) env { return tokenEnv(closedURL(t), none) }},
		{name: "dial refused, list after retries", call: list, want: notSent, wantAs: new(*net.OpError),
			setup: func(t *testing.T) env { return tokenEnv(closedURL(t), none) }},
		{name: "dial refused, job", call: job, want: notSent,
			setup: func(t *testing.T) env { return tokenEnv(closedURL(t), none) }},
		{name: "DNS failure", call: batch, want: notSent, wantAs: new(*net.DNSError),
			setup: func(t *testing.T) env {
				return tokenEnv("http://gaussdb-nosql.example.invalid", none, upgrade.WithHTTPClient(noDNS()))
			}},
		{name: "context done before sending", call: batch, want: notSent, wantIs: context.Canceled,
			setup: func(t *testing.T) env {
				srv, n := countingServer(t, hang)
				e := tokenEnv(srv.URL, func() int { return int(n.Load()) })
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				e.ctx = ctx
				return e
			}},
		{name: "batch validation", call: func(ctx context.Context, c *upgrade.Client) error {
			_, err := c.BatchUpgrade(ctx, make([]string, upgrade.MaxBatch+1))
			return err
		}, want: notSent,
			setup: func(t *testing.T) env {
				srv, n := countingServer(t, hang)
				return tokenEnv(srv.URL, func() int { return int(n.Load()) })
			}},
		{name: "list validation", call: func(ctx context.Context, c *upgrade.Client) error {
			_, err := c.ListInstances(ctx, upgrade.ListOptions{Limit: 1000})
			return err
		}, want: notSent,
			setup: func(t *testing.T) env {
				srv, n := countingServer(t, hang)
				return tokenEnv(srv.URL, func() int { return int(n.Load()) })
			}},
		{name: "signing failed", call: batch, want: notSent, wantIn: "aksk sign",
			setup: func(t *testing.T) env {
				srv, n := countingServer(t, hang)
				e := tokenEnv(srv.URL, func() int { return int(n.Load()) })
				e.auth = upgrade.AKSKAuth("", "")
				return e
			}},
		{name: "IAM login refused", call: batch, want: notSent, wantAs: new(*upgrade.APIError), wantIn: "APIG.0301",
			setup: func(t *testing.T) env {
				s := upgradetest.NewServer(t, upgradetest.WithIAMUser(testDomain, testUser, testPassword))
				e := tokenEnv(s.URL, func() int { return s.Calls("/instances/db-upgrade") })
				e.auth = upgrade.NewIAMAuth(upgrade.IAMConfig{Endpoint: s.IAMURL, Username: testUser, Password: testPassword + "x", Domain: testDomain, ProjectID: s.ProjectID})
				return e
			}},
		{name: "IAM unreachable", call: batch, want: notSent, wantIn: "iam login",
			setup: func(t *testing.T) env {
				s := upgradetest.NewServer(t)
				e := tokenEnv(s.URL, func() int { return s.Calls("") })
				e.auth = upgrade.NewIAMAuth(upgrade.IAMConfig{Endpoint: closedURL(t), Username: testUser, Password: testPassword, Domain: testDomain, ProjectID: s.ProjectID})
				return e
			}},
		{name: "IAM login times out", call: batch, want: notSent, wantIn: "iam login",
			setup: func(t *testing.T) env {
				iam, _ := countingServer(t, hang)
				s := upgradetest.NewServer(t)
				e := tokenEnv(s.URL, func() int { return s.Calls("") }, upgrade.WithCallTimeout(50*time.Millisecond),
					upgrade.WithRetry(upgrade.RetryPolicy{MaxAttempts: 1}))
				e.auth = upgrade.NewIAMAuth(upgrade.IAMConfig{Endpoint: iam.URL, Username: testUser, Password: testPassword, Domain: testDomain, ProjectID: s.ProjectID})
				return e
			}},
		{name: "timeout after sending", call: batch, want: unknown, wantIn: "may have reached the API",
			setup: func(t *testing.T) env {
				srv, n := countingServer(t, hang)
				return tokenEnv(srv.URL, func() int { return int(n.Load()) }, upgrade.WithCallTimeout(50*time.Millisecond))
			}},
		{name: "timeout after sending, read", call: list, want: unknown,
			setup: func(t *testing.T) env {
				srv, n := countingServer(t, hang)
				return tokenEnv(srv.URL, func() int { return int(n.Load()) }, upgrade.WithCallTimeout(20*time.Millisecond))
			}},
		{name: "connection closed mid-request", call: batch, want: unknown, wantIn: "may have reached the API",
			setup: func(t *testing.T) env {
				srv, n := countingServer(t, hangUp)
				return tokenEnv(srv.URL, func() int { return int(n.Load()) })
			}},
		{name: "cancelled after sending", call: batch, want: unknown, wantIs: context.Canceled,
			setup: func(t *testing.T) env {
				srv, n := countingServer(t, hang)
				e := tokenEnv(srv.URL, func() int { return int(n.Load()) })
				ctx, cancel := context.WithCancel(context.Background())
				t.Cleanup(cancel)
				time.AfterFunc(50*time.Millisecond, cancel)
				e.ctx = ctx
				return e
			}},
		{name: "error status", call: batch, want: answered, wantAs: new(*upgrade.APIError),
			setup: func(t *testing.T) env {
				srv, n := countingServer(t, func(w http.ResponseWriter, _ *http.Request) {
					w.WriteHeader(http.StatusInternalServerError)
					_, _ = fmt.Fprint(w, `{"error_code":"DBS.200998","error_msg":"System busy."}`)
				})
				return tokenEnv(srv.URL, func() int { return int(n.Load()) })
			}},
		{name: "redirect refused", call: batch, want: answered, wantAs: new(*upgrade.RedirectError),
			setup: func(t *testing.T) env {
				srv, n := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
					http.Redirect(w, r, "http://elsewhere.example/", http.StatusTemporaryRedirect)
				})
				return tokenEnv(srv.URL, func() int { return int(n.Load()) })
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := tt.setup(t)
			c, err := upgrade.NewClient(e.url, "p", e.auth, append([]upgrade.Option{fastRetry}, e.opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			err = tt.call(e.ctx, c)
			if err == nil {
				t.Fatal("got nil error, want one")
			}
			assertNoSecret(t, err)
			if got := classify(err); got != tt.want {
				t.Errorf("got %s for %v, want %s", got, err, tt.want)
			}
			var ns *upgrade.NotSentError
			if errors.As(err, &ns) != (tt.want == notSent) || (ns != nil && ns.Err == nil) {
				t.Errorf("errors.As(%v, *NotSentError) = %v, want %v with a cause", err, ns != nil, tt.want == notSent)
			}
			if tt.want == notSent {
				if n := e.hits(); n != 0 {
					t.Errorf("got %d requests at the API, want none", n)
				}
				if strings.Contains(err.Error(), "may have reached") {
					t.Errorf("got %q, want no claim that it may have reached the API", err)
				}
			} else if n := e.hits(); n == 0 {
				t.Errorf("the API received nothing, want the request to have been sent (test setup)")
			}
			if tt.wantAs != nil && !errors.As(err, tt.wantAs) {
				t.Errorf("got %v, want it to wrap %T", err, tt.wantAs)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("got %v, want it to wrap %v", err, tt.wantIs)
			}
			if tt.wantIn != "" && !strings.Contains(err.Error(), tt.wantIn) {
				t.Errorf("got %q, want it to contain %q", err, tt.wantIn)
			}
		})
	}
}

// While the credential breaker is open nothing is sent, and says so.
func TestNotSentDuringAuthBackoff(t *testing.T) {
	s := upgradetest.NewServer(t, upgradetest.WithToken(testToken))
	c, err := upgrade.NewClient(s.URL, s.ProjectID, upgrade.TokenAuth(testToken+"x"), fastRetry)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ListInstances(context.Background(), upgrade.ListOptions{})
	if classify(err) != answered {
		t.Fatalf("first call: got %v (%s), want the 401 answer", err, classify(err))
	}
	_, err = c.BatchUpgrade(context.Background(), []string{someID})
	var be *upgrade.AuthBackoffError
	if !errors.As(err, &be) || !upgrade.NotSent(err) {
		t.Errorf("got %v, want a not-sent *AuthBackoffError", err)
	}
	if n := s.Calls("/db-upgrade"); n != 0 {
		t.Errorf("got %d batch calls, want 0", n)
	}
}

// A read retried after an attempt that may have been sent is not "not
// sent", even when its last attempt could not connect.
func TestNotSentOnlyWhenNoAttemptWasSent(t *testing.T) {
	var attempts int
	hc := &http.Client{Transport: rtFunc(func(r *http.Request) (*http.Response, error) {
		attempts++
		if attempts == 1 {
			return nil, errors.New("read: connection reset by peer")
		}
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
	})}
	c, err := upgrade.NewClient("http://127.0.0.1:1", "p", upgrade.TokenAuth(testToken), upgrade.WithHTTPClient(hc),
		upgrade.WithRetry(upgrade.RetryPolicy{MaxAttempts: 2, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond, Deadline: time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ListInstances(context.Background(), upgrade.ListOptions{})
	if attempts != 2 {
		t.Fatalf("got %d attempts, want 2", attempts)
	}
	if upgrade.NotSent(err) {
		t.Errorf("NotSent(%v) = true, want false: the first attempt may have been received", err)
	}
}

// A read that got a 401 is replayed with a fresh IAM token; when the replay
// cannot connect, the first request was still sent.
func TestNotSentIAMReplay(t *testing.T) {
	s := upgradetest.NewServer(t, upgradetest.WithIAMUser(testDomain, testUser, testPassword))
	var attempts int
	hc := &http.Client{Transport: rtFunc(func(r *http.Request) (*http.Response, error) {
		attempts++
		if attempts == 1 {
			return &http.Response{StatusCode: http.StatusUnauthorized, Header: http.Header{}, Body: http.NoBody, Request: r}, nil
		}
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
	})}
	auth := upgrade.NewIAMAuth(upgrade.IAMConfig{Endpoint: s.IAMURL, Username: testUser, Password: testPassword, Domain: testDomain, ProjectID: s.ProjectID})
	c, err := upgrade.NewClient("http://127.0.0.1:1", s.ProjectID, auth, upgrade.WithHTTPClient(hc), upgrade.WithRetry(upgrade.RetryPolicy{MaxAttempts: 1}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Job(context.Background(), "j-1")
	if attempts != 2 || s.Logins() != 2 {
		t.Fatalf("got %d attempts and %d logins, want 2 and 2", attempts, s.Logins())
	}
	if err == nil || upgrade.NotSent(err) {
		t.Errorf("NotSent(%v) = true, want false: the first request was sent", err)
	}
}

func TestNotSentNil(t *testing.T) {
	if upgrade.NotSent(nil) {
		t.Error("NotSent(nil) = true, want false")
	}
	if !upgrade.NotSent(fmt.Errorf("outer: %w", &upgrade.NotSentError{Err: errors.New("cause")})) {
		t.Error("NotSent of a wrapped *NotSentError = false, want true")
	}
}
