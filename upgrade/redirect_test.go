package upgrade_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade/upgradetest"
)

// locationSecret is put in the Location's query: it must not appear in errors.
const locationSecret = "q-5ecret-in-location"

// redirectPair is a server that answers every request with a redirect to a
// second server, which records whatever reaches it.
type redirectPair struct {
	front, target *httptest.Server
	targetHost    string

	mu         sync.Mutex
	frontCalls int
	got        []string // method, path, headers and body of each request the target received
}

func newRedirectPair(t *testing.T, status int) *redirectPair {
	t.Helper()
	p := &redirectPair{}
	p.target = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		p.mu.Lock()
		p.got = append(p.got, fmt.Sprintf("%s %s %v %s", r.Method, r.URL, r.Header, b))
		p.mu.Unlock()
		// Answer like a success of every call, so that a followed redirect
		// looks like a success to the client.
		w.Header().Set("X-Subject-Token", "stolen-token")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, `{"upgrade_results":[],"instances":[],"total_count":0,"token":{"expires_at":"2099-01-01T00:00:00Z"}}`)
	}))
	t.Cleanup(p.target.Close)
	u, _ := url.Parse(p.target.URL)
	p.targetHost = u.Host
	p.front = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		p.mu.Lock()
		p.frontCalls++
		p.mu.Unlock()
		w.Header().Set("Location", p.target.URL+"/elsewhere"+r.URL.Path+"?sig="+locationSecret)
		w.WriteHeader(status)
	}))
	t.Cleanup(p.front.Close)
	return p
}

// check asserts that the target received nothing, that the front was asked
// exactly once, and that err is a *RedirectError naming status and host only.
func (p *redirectPair) check(t *testing.T, err error, status int) {
	t.Helper()
	p.mu.Lock()
	got, front := p.got, p.frontCalls
	p.mu.Unlock()
	if len(got) != 0 {
		t.Errorf("the redirect target received %d requests, want none: %q", len(got), got)
	}
	if front != 1 {
		t.Errorf("got %d requests to the redirecting server, want 1 (a redirect is not retried)", front)
	}
	assertNoSecret(t, err)
	var re *upgrade.RedirectError
	if !errors.As(err, &re) {
		t.Fatalf("got %v (%T), want an *upgrade.RedirectError", err, err)
	}
	if re.Status != status || re.Host != p.targetHost {
		t.Errorf("got status %d host %q, want %d %q", re.Status, re.Host, status, p.targetHost)
	}
	for _, want := range []string{fmt.Sprint(status), p.targetHost} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got %q, want it to contain %q", err, want)
		}
	}
	for _, bad := range []string{locationSecret, "/elsewhere"} {
		if strings.Contains(err.Error(), bad) {
			t.Errorf("got %q, want the Location's host only, not %q", err, bad)
		}
	}
	if upgrade.NotSent(err) {
		t.Errorf("NotSent(%v) = true, want false: the first request was sent", err)
	}
}

// followAll is a caller's client that would follow any redirect.
func followAll() *http.Client {
	return &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return nil }}
}

func TestNoRedirectsFromTheAPI(t *testing.T) {
	calls := []struct {
		name string
		call func(c *upgrade.Client) error
	}{
		{name: "batch POST", call: func(c *upgrade.Client) error {
			_, err := c.BatchUpgrade(context.Background(), []string{"046287aae57843b1a7bc61b7a8812f41in13"})
			return err
		}},
		{name: "list GET", call: func(c *upgrade.Client) error {
			_, err := c.ListInstances(context.Background(), upgrade.ListOptions{})
			return err
		}},
		{name: "job GET", call: func(c *upgrade.Client) error { _, err := c.Job(context.Background(), "j-1"); return err }},
	}
	auths := []struct {
		name string
		auth func(t *testing.T) upgrade.Authenticator
	}{
		{name: "token", auth: func(*testing.T) upgrade.Authenticator { return upgrade.TokenAuth(testToken) }},
		{name: "aksk", auth: func(*testing.T) upgrade.Authenticator { return upgrade.AKSKAuth(testAK, testSK) }},
		{name: "iam", auth: func(t *testing.T) upgrade.Authenticator {
			iam := upgradetest.NewServer(t, upgradetest.WithIAMUser(testDomain, testUser, testPassword))
			return upgrade.NewIAMAuth(upgrade.IAMConfig{Endpoint: iam.IAMURL, Username: testUser, Password: testPassword, Domain: testDomain, ProjectID: iam.ProjectID})
		}},
	}
	clients := []struct {
		name string
		opts []upgrade.Option
	}{
		{name: "default client"},
		{name: "caller's client that follows", opts: []upgrade.Option{upgrade.WithHTTPClient(followAll())}},
	}
	for _, status := range []int{http.StatusTemporaryRedirect, http.StatusPermanentRedirect, http.StatusFound} {
		for _, cl := range calls {
			for _, a := range auths {
				for _, hc := range clients {
					t.Run(fmt.Sprintf("%d/%s/%s/%s", status, cl.name, a.name, hc.name), func(t *testing.T) {
						t.Parallel()
						p := newRedirectPair(t, status)
						c, err := upgrade.NewClient(p.front.URL, "p", a.auth(t), append([]upgrade.Option{fastRetry}, hc.opts...)...)
						if err != nil {
							t.Fatal(err)
						}
						err = cl.call(c)
						p.check(t, err, status)
					})
				}
			}
		}
	}
}

func TestNoRedirectsFromIAMLogin(t *testing.T) {
	for _, status := range []int{http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		for name, hc := range map[string]*http.Client{"default client": nil, "caller's client that follows": followAll()} {
			t.Run(fmt.Sprintf("%d/%s", status, name), func(t *testing.T) {
				t.Parallel()
				p := newRedirectPair(t, status)
				api := upgradetest.NewServer(t, upgradetest.WithIAMUser(testDomain, testUser, testPassword))
				auth := upgrade.NewIAMAuth(upgrade.IAMConfig{Endpoint: p.front.URL, Username: testUser, Password: testPassword, Domain: testDomain, ProjectID: api.ProjectID, HTTPClient: hc})
				c, err := upgrade.NewClient(api.URL, api.ProjectID, auth, fastRetry)
				if err != nil {
					t.Fatal(err)
				}
				_, err = c.BatchUpgrade(context.Background(), []string{"046287aae57843b1a7bc61b7a8812f41in13"})
				if n := api.Calls(""); n != 0 {
					t.Errorf("got %d API calls, want none without a token", n)
				}
				var re *upgrade.RedirectError
				if !errors.As(err, &re) {
					t.Fatalf("got %v (%T), want an *upgrade.RedirectError", err, err)
				}
				p.mu.Lock()
				got, front := p.got, p.frontCalls
				p.mu.Unlock()
				if len(got) != 0 {
					t.Errorf("the redirect target received %d requests, want none (no password): %q", len(got), got)
				}
				if front != 1 {
					t.Errorf("got %d login requests, want 1 (a redirect is not retried)", front)
				}
				if re.Status != status || re.Host != p.targetHost {
					t.Errorf("got status %d host %q, want %d %q", re.Status, re.Host, status, p.targetHost)
				}
				if !strings.Contains(err.Error(), "iam login") || !strings.Contains(err.Error(), p.targetHost) || strings.Contains(err.Error(), locationSecret) {
					t.Errorf("got %q, want it to name the login and the host, not the Location's query", err)
				}
				assertNoSecret(t, err)
				// The GeminiDB API received nothing: the batch was not sent.
				if !upgrade.NotSent(err) {
					t.Errorf("NotSent(%v) = false, want true: the API was never called", err)
				}
			})
		}
	}
}

// A redirect with a relative Location names the API's own host; one without
// a Location is still refused.
func TestRedirectLocationShapes(t *testing.T) {
	tests := []struct {
		name     string
		location string
		wantHost func(self string) string
	}{
		{name: "relative", location: "/other?sig=" + locationSecret, wantHost: func(self string) string { return self }},
		{name: "missing", location: "", wantHost: func(string) string { return "" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls int
			var mu sync.Mutex
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				calls++
				mu.Unlock()
				if tt.location != "" {
					w.Header().Set("Location", tt.location)
				}
				w.WriteHeader(http.StatusTemporaryRedirect)
			}))
			t.Cleanup(srv.Close)
			u, _ := url.Parse(srv.URL)
			c, err := upgrade.NewClient(srv.URL, "p", upgrade.TokenAuth(testToken), fastRetry)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.BatchUpgrade(context.Background(), []string{"a"})
			var re *upgrade.RedirectError
			if !errors.As(err, &re) {
				t.Fatalf("got %v (%T), want an *upgrade.RedirectError", err, err)
			}
			if want := tt.wantHost(u.Host); re.Host != want || re.Status != http.StatusTemporaryRedirect {
				t.Errorf("got %d %q, want 307 %q", re.Status, re.Host, want)
			}
			if strings.Contains(err.Error(), locationSecret) {
				t.Errorf("got %q, want no Location query", err)
			}
			mu.Lock()
			defer mu.Unlock()
			if calls != 1 {
				t.Errorf("got %d calls, want 1", calls)
			}
		})
	}
}
