package upgrade

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

const (
	// maxErrorBody caps how much of a non-2xx body is read: enough for any
	// error document, little enough that a misbehaving proxy cannot exhaust memory.
	maxErrorBody = 64 << 10
	// maxSuccessBody caps a 2xx body; a full page of 100 instances is far below it.
	maxSuccessBody = 32 << 20

	defaultCallTimeout = 30 * time.Second
)

// Observer call names passed to the function given to WithObserver.
const (
	CallListInstances = "list_instances"
	CallBatchUpgrade  = "batch_upgrade"
	CallJob           = "job"
	CallIAMLogin      = "iam_login"
	CallListByTags    = "list_instances_by_tags"
)

// RetryPolicy bounds how reads (instance lists, jobs, IAM logins) are retried
// on 429, 5xx and connection errors. The batch patch call is never retried.
// Zero fields take the defaults of DefaultRetryPolicy.
type RetryPolicy struct {
	MaxAttempts int           // attempts in total, including the first; 1 disables retries
	MinBackoff  time.Duration // wait before the second attempt; doubled each time
	MaxBackoff  time.Duration // cap of a single wait
	Deadline    time.Duration // cap of the whole call, attempts and waits together
}

// DefaultRetryPolicy is the policy a Client uses unless WithRetry says otherwise:
// 4 attempts, 500ms doubling up to 5s, at most 60s in total.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{MaxAttempts: 4, MinBackoff: 500 * time.Millisecond, MaxBackoff: 5 * time.Second, Deadline: 60 * time.Second}
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	d := DefaultRetryPolicy()
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = d.MaxAttempts
	}
	if p.MinBackoff <= 0 {
		p.MinBackoff = d.MinBackoff
	}
	if p.MaxBackoff <= 0 {
		p.MaxBackoff = d.MaxBackoff
	}
	if p.MaxBackoff < p.MinBackoff {
		p.MaxBackoff = p.MinBackoff
	}
	if p.Deadline <= 0 {
		p.Deadline = d.Deadline
	}
	return p
}

// backoff returns the wait before attempt n+1 (n ≥ 1): exponential with
// jitter in [d/2, d], so that many clients throttled together spread out.
func (p RetryPolicy) backoff(n int) time.Duration {
	d := p.MinBackoff
	for i := 1; i < n && d < p.MaxBackoff; i++ {
		d *= 2
	}
	if d > p.MaxBackoff {
		d = p.MaxBackoff
	}
	half := d / 2
	return half + rand.N(half+1)
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient makes the Client send its requests through a copy of hc
// whose Transport is wrapped by the Authenticator and which follows no
// redirect, whatever hc.CheckRedirect says (see RedirectError); hc itself is
// not modified. When hc has no Transport (and without WithHTTPClient), the
// Client uses a NewTransport of its own, never http.DefaultTransport.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) {
		if hc != nil {
			c.base = hc
		}
	}
}

// WithCallTimeout bounds each HTTP attempt (default 30s). Retries get a fresh timeout.
func WithCallTimeout(d time.Duration) Option {
	return func(c *Client) {
		if d > 0 {
			c.callTimeout = d
		}
	}
}

// WithRetry sets how reads are retried; see RetryPolicy.
func WithRetry(p RetryPolicy) Option {
	return func(c *Client) { c.retry = p.withDefaults() }
}

// WithObserver registers fn, called once per API call (after its retries)
// with the call's name (CallListInstances, CallBatchUpgrade, CallJob,
// CallIAMLogin, CallListByTags), its duration and its final error. Meant for metrics.
// Calls refused without a request during an authentication backoff are
// reported too, with an error wrapping *AuthBackoffError.
func WithObserver(fn func(call string, d time.Duration, err error)) Option {
	return func(c *Client) { c.observer = fn }
}

// Client calls the GeminiDB API of one project. It is safe for concurrent use.
//
// It never follows a redirect: a 3xx answer ends the call with a
// *RedirectError, so that no body or credential is ever resent to another host.
//
// When a call ends with HTTP 401 (the API's, or the IAM login's), the Client
// sends nothing for the authentication backoff (WithAuthBackoff): every call
// fails at once with an *AuthBackoffError wrapping that *APIError. Then one
// call at a time is sent until one succeeds, which ends the backoff, or gets
// a 401 again, which starts a new one.
type Client struct {
	baseURL     *url.URL
	projectID   string
	base        *http.Client
	hc          *http.Client
	callTimeout time.Duration
	retry       RetryPolicy
	observer    func(call string, d time.Duration, err error)
	authBackoff time.Duration
	now         func() time.Time

	// breaker refuses calls for authBackoff after a 401.
	breaker authBreaker

	// fleetHint is the last total_count of an unfiltered instance list, or
	// -1: it lets Resolve choose between paging and per-reference lookups
	// without a probing call.
	fleetHint atomic.Int64
}

// NewClient returns a Client for the GeminiDB API at baseURL (e.g.
// https://gaussdb-nosql.eu-de.otc.t-systems.com) and the project projectID,
// authenticating every request with auth.
func NewClient(baseURL, projectID string, auth Authenticator, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimSpace(baseURL))
	if err != nil {
		return nil, fmt.Errorf("new client: parse base URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("new client: base URL %q must be http(s)://host", baseURL)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("new client: base URL %q must not have a query or fragment", baseURL)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	if strings.TrimSpace(projectID) == "" {
		return nil, errors.New("new client: project ID is empty")
	}
	if strings.ContainsAny(projectID, "/?#") {
		return nil, fmt.Errorf("new client: project ID %q contains '/', '?' or '#'", projectID)
	}
	if auth == nil {
		return nil, errors.New("new client: no authenticator")
	}
	c := &Client{
		baseURL:     u,
		projectID:   projectID,
		base:        &http.Client{},
		callTimeout: defaultCallTimeout,
		retry:       DefaultRetryPolicy(),
		authBackoff: DefaultAuthBackoff,
		now:         time.Now,
	}
	c.fleetHint.Store(-1)
	for _, o := range opts {
		o(c)
	}
	hc := noRedirects(c.base)
	rt := hc.Transport
	if rt == nil {
		// A pool of its own, not http.DefaultTransport's 2 idle
		// connections per host; the call timeout bounds each attempt, so
		// the header timeout must not be shorter.
		t := NewTransport()
		t.ResponseHeaderTimeout = max(t.ResponseHeaderTimeout, c.callTimeout)
		rt = t
	}
	hc.Transport = auth.Wrap(sendProbe{rt})
	c.hc = hc
	return c, nil
}

// callInfo travels in a request's context so that an Authenticator that has
// to call out itself (the IAM login) uses the client's timeout, retries and observer.
type callInfo struct {
	timeout  time.Duration
	retry    RetryPolicy
	observer func(call string, d time.Duration, err error)
}

type callInfoKey struct{}

func callInfoFrom(ctx context.Context) callInfo {
	if ci, ok := ctx.Value(callInfoKey{}).(callInfo); ok {
		return ci
	}
	return callInfo{timeout: defaultCallTimeout, retry: DefaultRetryPolicy()}
}

// apiCall describes one call of the API for do.
type apiCall struct {
	name   string     // observer name, e.g. CallListInstances
	what   string     // error prefix naming the call, e.g. "list instances"
	method string     // GET or POST
	path   string     // below the project, e.g. "/instances"
	query  url.Values // may be nil
	body   any        // JSON-encoded when non-nil
	retry  bool       // reads only
	out    any        // decoded from a 2xx body when non-nil
}

// do performs call against the project's API and decodes the answer. While
// the credential breaker is open it fails at once, without any request.
func (c *Client) do(ctx context.Context, call apiCall) error {
	start := time.Now()
	probe, err := c.breaker.enter(c.now())
	if err != nil {
		err = notSent(fmt.Errorf("%s: %w", call.what, err))
	} else {
		err = c.doBreaking(ctx, call, probe)
	}
	if c.observer != nil {
		c.observer(call.name, time.Since(start), err)
	}
	return err
}

// doBreaking runs the call and reports its outcome to the breaker, even
// if the call panics, so a probe can never stay open for good.
func (c *Client) doBreaking(ctx context.Context, call apiCall, probe bool) (err error) {
	defer func() {
		if r := recover(); r != nil {
			c.breaker.leave(probe, fmt.Errorf("%s: panic: %v", call.what, r), c.now(), c.authBackoff)
			panic(r)
		}
		c.breaker.leave(probe, err, c.now(), c.authBackoff)
	}()
	return c.doOnce(ctx, call)
}

func (c *Client) doOnce(ctx context.Context, call apiCall) error {
	u := *c.baseURL
	u.Path = c.baseURL.Path + "/v3/" + c.projectID + call.path
	u.RawQuery = call.query.Encode()
	var body []byte
	if call.body != nil {
		b, err := json.Marshal(call.body)
		if err != nil {
			return notSent(fmt.Errorf("%s: encode request: %w", call.what, err))
		}
		body = b
	}
	ctx = context.WithValue(ctx, callInfoKey{}, callInfo{timeout: c.callTimeout, retry: c.retry, observer: c.observer})
	ex := exchange{hc: c.hc, timeout: c.callTimeout, retry: c.retry, what: call.what, method: call.method, url: u.String(), path: u.Path, body: body, mayRetry: call.retry, classify: true}
	res, err := ex.run(ctx)
	if err != nil {
		return err
	}
	if call.out != nil && len(bytes.TrimSpace(res.body)) > 0 {
		if err := json.Unmarshal(res.body, call.out); err != nil {
			return fmt.Errorf("%s: decode %d answer of %s %s: %w", call.what, res.status, call.method, u.Path, err)
		}
	}
	return nil
}

// exchange is one HTTP request with its retries, shared by the API calls and
// the IAM login. It owns reading, capping and closing bodies.
type exchange struct {
	hc       *http.Client
	timeout  time.Duration
	retry    RetryPolicy
	what     string // error prefix
	method   string
	url      string
	path     string // for APIError and error text: no host, no query
	body     []byte
	mayRetry bool // whether this request may be retried at all
	// classify marks failures that certainly sent nothing as *NotSentError.
	// Only the API's exchanges do: hc must then send through a sendProbe.
	classify bool
}

type exchangeResult struct {
	status int
	header http.Header
	body   []byte
}

// run sends the request, retrying reads on 429, 5xx and connection errors.
// A cancelled context wins over whatever the transport said. The error is a
// *NotSentError (when ex.classify) only if no attempt may have been sent.
func (ex exchange) run(ctx context.Context) (exchangeResult, error) {
	p := ex.retry.withDefaults()
	if !ex.mayRetry {
		p.MaxAttempts = 1
	}
	deadline := time.Now().Add(p.Deadline)
	var lastErr error
	anySent := false
	fail := func(err error) (exchangeResult, error) {
		if ex.classify && !anySent {
			err = notSent(err)
		}
		return exchangeResult{}, err
	}
	for attempt := 1; ; attempt++ {
		res, retryable, wait, sent, err := ex.attempt(ctx, deadline)
		if err == nil {
			return res, nil
		}
		anySent = anySent || sent
		if ctx.Err() != nil {
			return fail(fmt.Errorf("%s: %s %s: %w", ex.what, ex.method, ex.path, ctx.Err()))
		}
		lastErr = err
		if !retryable || attempt >= p.MaxAttempts {
			break
		}
		d := p.backoff(attempt)
		if wait > d {
			d = min(wait, p.MaxBackoff)
		}
		if time.Now().Add(d).After(deadline) {
			break
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return fail(fmt.Errorf("%s: %s %s: %w (while waiting to retry after: %v)", ex.what, ex.method, ex.path, ctx.Err(), lastErr))
		case <-t.C:
		}
	}
	return fail(lastErr)
}

// attempt performs one HTTP round trip. It reports whether a failure may be
// retried, how long the server asked to wait (Retry-After), and whether the
// request may have been sent (false only when that is certain not to be so).
func (ex exchange) attempt(ctx context.Context, deadline time.Time) (res exchangeResult, retryable bool, wait time.Duration, sent bool, err error) {
	if err := ctx.Err(); err != nil {
		return res, false, 0, false, err // run names the call
	}
	// Each attempt gets the call timeout, but none outlives the retry deadline.
	actx, cancel := context.WithDeadline(ctx, earliest(time.Now().Add(ex.timeout), deadline))
	defer cancel()
	// A fresh state per attempt; it also hides the state of an API call
	// from the IAM login that call may trigger.
	st := &sendState{}
	actx = context.WithValue(actx, sendStateKey{}, st)
	var rd io.Reader
	if ex.body != nil {
		rd = bytes.NewReader(ex.body)
	}
	req, err := http.NewRequestWithContext(actx, ex.method, ex.url, rd)
	if err != nil {
		return res, false, 0, false, fmt.Errorf("%s: build request: %w", ex.what, err)
	}
	req.Header.Set("Accept", "application/json")
	if ex.body != nil {
		req.Header.Set("Content-Type", "application/json;charset=utf-8")
	}
	resp, err := ex.hc.Do(req)
	if err != nil {
		sent := st.sent(err)
		if ctx.Err() != nil {
			return res, false, 0, sent, ctx.Err()
		}
		inner := err
		var ue *url.Error
		if errors.As(err, &ue) {
			inner = ue.Err
		}
		// An error raised by an Authenticator (e.g. a failed IAM login) has
		// already been retried where it happened; it is not a connection error.
		var apiErr *APIError
		if errors.As(inner, &apiErr) {
			return res, false, 0, sent, fmt.Errorf("%s: %w", ex.what, inner)
		}
		var authErr *authError
		if errors.As(inner, &authErr) {
			return res, false, 0, sent, fmt.Errorf("%s: %w", ex.what, inner)
		}
		if actx.Err() != nil {
			return res, true, 0, sent, fmt.Errorf("%s: %s %s: no answer in time (call timeout %s): %w", ex.what, ex.method, ex.path, ex.timeout, inner)
		}
		return res, true, 0, sent, fmt.Errorf("%s: %s %s: %w", ex.what, ex.method, ex.path, inner)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		// The client follows no redirect (see noRedirects): the answer is
		// final, and sending the request elsewhere is not ours to decide.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		return res, false, 0, true, fmt.Errorf("%s: %w", ex.what, redirectError(resp, ex.method, ex.path))
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		b, rerr := io.ReadAll(io.LimitReader(resp.Body, maxSuccessBody))
		if rerr != nil {
			if ctx.Err() != nil {
				return res, false, 0, true, ctx.Err()
			}
			return res, true, 0, true, fmt.Errorf("%s: %s %s: read answer: %w", ex.what, ex.method, ex.path, rerr)
		}
		return exchangeResult{status: resp.StatusCode, header: resp.Header, body: b}, false, 0, true, nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	apiErr := parseAPIError(resp, b, ex.method, ex.path)
	retryable = resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500
	return res, retryable, retryAfter(resp.Header.Get("Retry-After")), true, fmt.Errorf("%s: %w", ex.what, apiErr)
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// retryAfter reads a Retry-After header given in seconds; dates are ignored.
func retryAfter(v string) time.Duration {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n <= 0 {
		return 0
	}
	return time.Duration(n) * time.Second
}
