package upgrade

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// IAMConfig is what NewIAMAuth needs to log in with a password and obtain a
// project-scoped token.
type IAMConfig struct {
	Endpoint  string // IAM base URL, e.g. https://iam.eu-de.otc.t-systems.com
	Username  string
	Password  string
	Domain    string // account (domain) name
	ProjectID string // the token is scoped to this project

	HTTPClient *http.Client     // for the login call (copied; redirects are never followed); default a client with a NewTransport of its own
	Now        func() time.Time // clock for expiry; default time.Now
}

// String keeps the password out of logs and %v output.
func (c IAMConfig) String() string {
	return fmt.Sprintf("IAMConfig{Endpoint:%s Username:%s Password:[redacted] Domain:%s ProjectID:%s}", c.Endpoint, c.Username, c.Domain, c.ProjectID)
}

// GoString keeps the password out of %#v output.
func (c IAMConfig) GoString() string { return c.String() }

// renewMargin is how long before expiry a token is replaced; tokens that live
// shorter than twice this are replaced at half-life.
const renewMargin = 10 * time.Minute

// NewIAMAuth authenticates with an IAM token obtained by password login
// (POST {Endpoint}/v3/auth/tokens?nocatalog=true) and sent as X-Auth-Token.
// The token is cached and renewed shortly before it expires; concurrent
// requests share one login. When the API answers 401 to a read (GET), the
// token is dropped, renewed once and the read retried once; other methods are
// never resent. A redirect from IAM is refused (*RedirectError), never followed.
func NewIAMAuth(cfg IAMConfig) Authenticator {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	// A redirect would resend the password elsewhere: refuse it, even when
	// the caller's client would follow it.
	cfg.HTTPClient = noRedirects(cfg.HTTPClient)
	if cfg.HTTPClient.Transport == nil {
		cfg.HTTPClient.Transport = NewTransport()
	}
	return &iamAuth{cfg: cfg}
}

type iamAuth struct {
	cfg IAMConfig

	mu       sync.Mutex
	token    string
	renewAt  time.Time
	inflight *loginCall
}

// loginCall is a login in progress that any number of requests wait for.
// It is cancelled when every waiter has given up.
type loginCall struct {
	done    chan struct{}
	token   string
	err     error
	waiters int // guarded by iamAuth.mu
	cancel  context.CancelFunc
}

// String keeps the password and token out of logs and %v output.
func (a *iamAuth) String() string { return "IAMAuth(" + a.cfg.String() + ")" }

// GoString keeps the password and token out of %#v output.
func (a *iamAuth) GoString() string { return a.String() }

func (a *iamAuth) Wrap(next http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		tok, err := a.tokenFor(r.Context())
		if err != nil {
			if r.Body != nil {
				_ = r.Body.Close()
			}
			return nil, err
		}
		replay := r.Method == http.MethodGet || r.Method == http.MethodHead
		r2 := r.Clone(r.Context())
		r2.Header.Set("X-Auth-Token", tok)
		resp, err := next.RoundTrip(r2)
		if err != nil || resp.StatusCode != http.StatusUnauthorized {
			return resp, err
		}
		// The token was revoked or expired early: forget it so the next
		// request logs in again; resend only what is safe to resend.
		a.invalidate(tok)
		if !replay || (r.Body != nil && r.Body != http.NoBody && r.GetBody == nil) {
			return resp, nil
		}
		tok2, err := a.tokenFor(r.Context())
		if err != nil {
			// Keep the API's 401 as the answer; the login failure is in err
			// for the next call, which will try again.
			return resp, nil
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		_ = resp.Body.Close()
		r3 := r.Clone(r.Context())
		if r.GetBody != nil {
			b, err := r.GetBody()
			if err != nil {
				return nil, &authError{fmt.Errorf("iam auth: replay body: %w", err)}
			}
			r3.Body = b
		}
		r3.Header.Set("X-Auth-Token", tok2)
		return next.RoundTrip(r3)
	})
}

// tokenFor returns a valid token, logging in when there is none or it is due
// for renewal. Only one login runs at a time; it is detached from any single
// caller's cancellation so that one impatient caller cannot fail the others.
func (a *iamAuth) tokenFor(ctx context.Context) (string, error) {
	a.mu.Lock()
	if a.token != "" && a.cfg.Now().Before(a.renewAt) {
		t := a.token
		a.mu.Unlock()
		return t, nil
	}
	call := a.inflight
	if call == nil {
		lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		call = &loginCall{done: make(chan struct{}), cancel: cancel}
		a.inflight = call
		go a.login(lctx, callInfoFrom(ctx), call)
	}
	call.waiters++
	a.mu.Unlock()
	select {
	case <-call.done:
		return call.token, call.err
	case <-ctx.Done():
		a.mu.Lock()
		call.waiters--
		if call.waiters == 0 && a.inflight == call {
			// Nobody waits any more: stop the login, and let the next
			// caller start a fresh one rather than inherit a cancelled one.
			call.cancel()
			a.inflight = nil
		}
		a.mu.Unlock()
		return "", fmt.Errorf("iam login: %w", ctx.Err())
	}
}

func (a *iamAuth) invalidate(tok string) {
	a.mu.Lock()
	if a.token == tok {
		a.token = ""
	}
	a.mu.Unlock()
}

func (a *iamAuth) login(ctx context.Context, ci callInfo, call *loginCall) {
	start := time.Now()
	tok, expires, err := a.doLogin(ctx, ci)
	if ci.observer != nil {
		ci.observer(CallIAMLogin, time.Since(start), err)
	}
	a.mu.Lock()
	if err == nil {
		now := a.cfg.Now()
		margin := renewMargin
		if life := expires.Sub(now); life < 2*margin {
			margin = life / 2
		}
		a.token = tok
		a.renewAt = expires.Add(-margin)
		call.token = tok
	} else {
		call.err = &authError{err}
	}
	if a.inflight == call {
		a.inflight = nil
	}
	a.mu.Unlock()
	call.cancel()
	close(call.done)
}

// doLogin performs the password login and returns the token and its expiry.
func (a *iamAuth) doLogin(ctx context.Context, ci callInfo) (string, time.Time, error) {
	u, err := url.Parse(strings.TrimRight(strings.TrimSpace(a.cfg.Endpoint), "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", time.Time{}, fmt.Errorf("iam login: endpoint %q must be http(s)://host", a.cfg.Endpoint)
	}
	if a.cfg.Username == "" || a.cfg.Password == "" || a.cfg.Domain == "" || a.cfg.ProjectID == "" {
		return "", time.Time{}, errors.New("iam login: username, password, domain and project ID are all required")
	}
	u.Path += "/v3/auth/tokens"
	u.RawQuery = "nocatalog=true"
	body, err := json.Marshal(iamLoginBody(a.cfg))
	if err != nil {
		return "", time.Time{}, fmt.Errorf("iam login: encode request: %w", err)
	}
	timeout := ci.timeout
	if a.cfg.HTTPClient.Timeout > 0 && (timeout <= 0 || a.cfg.HTTPClient.Timeout < timeout) {
		timeout = a.cfg.HTTPClient.Timeout
	}
	if timeout <= 0 {
		timeout = defaultCallTimeout
	}
	ex := exchange{
		hc: a.cfg.HTTPClient, timeout: timeout, retry: ci.retry, what: "iam login",
		method: http.MethodPost, url: u.String(), path: u.Path, body: body, mayRetry: true,
	}
	res, err := ex.run(ctx)
	if err != nil {
		return "", time.Time{}, err
	}
	tok := res.header.Get("X-Subject-Token")
	if tok == "" {
		return "", time.Time{}, fmt.Errorf("iam login: POST %s: %d answer without X-Subject-Token", u.Path, res.status)
	}
	var w struct {
		Token struct {
			ExpiresAt string `json:"expires_at"`
		} `json:"token"`
	}
	_ = json.Unmarshal(res.body, &w)
	expires, err := time.Parse(time.RFC3339Nano, w.Token.ExpiresAt)
	if err != nil {
		// Without a readable expiry, assume a short life rather than 24 h:
		// renewing early is cheap, using a dead token is not.
		expires = a.cfg.Now().Add(time.Hour)
	}
	return tok, expires, nil
}

func iamLoginBody(cfg IAMConfig) any {
	type name struct {
		Name string `json:"name"`
	}
	type user struct {
		Name     string `json:"name"`
		Password string `json:"password"`
		Domain   name   `json:"domain"`
	}
	type password struct {
		User user `json:"user"`
	}
	type identity struct {
		Methods  []string `json:"methods"`
		Password password `json:"password"`
	}
	type project struct {
		ID string `json:"id"`
	}
	type scope struct {
		Project project `json:"project"`
	}
	type auth struct {
		Identity identity `json:"identity"`
		Scope    scope    `json:"scope"`
	}
	return struct {
		Auth auth `json:"auth"`
	}{auth{
		Identity: identity{Methods: []string{"password"}, Password: password{User: user{Name: cfg.Username, Password: cfg.Password, Domain: name{cfg.Domain}}}},
		Scope:    scope{Project: project{ID: cfg.ProjectID}},
	}}
}
