package upgrade

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync/atomic"
)

// RedirectError is a 3xx answer (from the GeminiDB API or the IAM login)
// that the Client refused to follow. Following it would resend the request,
// its body (the instance IDs, the IAM password) and its credentials (token,
// signature) to whatever host the Location names, so no redirect is ever
// followed: the request was sent once, to the configured endpoint, and the
// call ends here. Whoever answered did not say it acted on the request;
// treat the outcome of a refused batch call as unknown. Usually the endpoint
// is misconfigured (http instead of https, or a wrong host name).
type RedirectError struct {
	Status int    // HTTP status of the answer, e.g. 307
	Host   string // host[:port] the Location names; "" when it named none
	Method string // HTTP method of the refused call
	Path   string // URL path of the refused call, no query, no host
}

// Error names the status and the Location's host, never its path or query,
// which may carry tokens of their own.
func (e *RedirectError) Error() string {
	to := "without a Location"
	if e.Host != "" {
		to = "to host " + e.Host
	}
	return fmt.Sprintf("%s %s: refused to follow a %d redirect %s (check the endpoint)", e.Method, e.Path, e.Status, to)
}

// refuseRedirects makes an http.Client hand a 3xx answer back instead of
// following it; the exchange turns it into a *RedirectError.
func refuseRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// noRedirects returns a copy of hc (a plain client when nil) that follows
// no redirect, whatever hc's own CheckRedirect says; hc is not modified.
func noRedirects(hc *http.Client) *http.Client {
	var c http.Client
	if hc != nil {
		c = *hc
	}
	c.CheckRedirect = refuseRedirects
	return &c
}

// redirectError describes resp, a 3xx answer to method path.
func redirectError(resp *http.Response, method, path string) *RedirectError {
	e := &RedirectError{Status: resp.StatusCode, Method: method, Path: path}
	// Location resolves a relative reference against the request's URL.
	if u, err := resp.Location(); err == nil {
		e.Host = u.Host
	}
	return e
}

// NotSentError is the error of a call that certainly sent nothing to the
// GeminiDB API: no byte of the request reached it, so nothing was started
// and the call may be made again. Err is the cause. A call fails this way when
//   - its arguments were refused before any I/O (e.g. more than MaxBatch IDs),
//     or the request could not be built;
//   - the credential breaker is open (Err wraps *AuthBackoffError);
//   - authenticating it failed before it was sent: the IAM login failed
//     (refused, unreachable, timed out, even redirected), or AK/SK signing failed;
//   - its context was done before it was sent (Err wraps the context's error);
//   - connecting failed: a *net.OpError whose Op is "dial" (connection
//     refused, DNS failure), on a fresh connection, on every attempt.
//
// Any other failure without an answer (a timeout or a reset after the
// request was written, an EOF) is not a NotSentError: the outcome is
// unknown. Nor is an answer: an *APIError is the API's definite refusal, and
// a *RedirectError means the request was sent. Note that the IAM login's own
// refusal is an *APIError inside a NotSentError: ask NotSent first.
type NotSentError struct {
	Err error
}

// Error is the cause's message, which already says what failed.
func (e *NotSentError) Error() string { return e.Err.Error() }

// Unwrap returns the cause, so errors.As still finds an *APIError or
// *AuthBackoffError in it.
func (e *NotSentError) Unwrap() error { return e.Err }

// NotSent reports whether err (from any Client call, e.g. BatchUpgrade) is
// certain not to have reached the GeminiDB API; see NotSentError. It is
// false for nil, for answers, and whenever the outcome is unknown.
func NotSent(err error) bool {
	var ns *NotSentError
	return errors.As(err, &ns)
}

// notSent marks err as certainly not sent; nil stays nil.
func notSent(err error) error {
	if err == nil || NotSent(err) {
		return err
	}
	return &NotSentError{Err: err}
}

// isDial reports whether err is a failure to open a connection (refused,
// unreachable, DNS), before any byte of a request could be written.
func isDial(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

// sendState records what reached the transport below the Authenticator
// during one attempt, to tell "not sent" from "unknown".
type sendState struct {
	roundTrips atomic.Int32 // requests handed to the transport
	gotConn    atomic.Bool  // a connection was obtained for one of them
}

type sendStateKey struct{}

// sent reports whether the attempt that failed with err may have put
// request bytes on the wire: anything handed to the transport may have,
// unless the one request's connection could not even be dialled.
func (st *sendState) sent(err error) bool {
	switch n := st.roundTrips.Load(); {
	case n == 0:
		return false // refused by the Authenticator, or cancelled, before sending
	case n == 1 && !st.gotConn.Load() && isDial(err):
		return false
	default:
		return true
	}
}

// sendProbe sits between the Authenticator and the caller's transport and
// counts, in the attempt's sendState, the requests that reach the transport
// and whether a connection was obtained for them.
type sendProbe struct{ next http.RoundTripper }

func (p sendProbe) RoundTrip(r *http.Request) (*http.Response, error) {
	st, _ := r.Context().Value(sendStateKey{}).(*sendState)
	if st == nil {
		return p.next.RoundTrip(r)
	}
	st.roundTrips.Add(1)
	trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { st.gotConn.Store(true) }}
	return p.next.RoundTrip(r.WithContext(httptrace.WithClientTrace(r.Context(), trace)))
}
