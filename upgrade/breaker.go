package upgrade

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// DefaultAuthBackoff is how long a Client refuses to call the API after its
// credentials were refused (HTTP 401), unless WithAuthBackoff says otherwise.
const DefaultAuthBackoff = time.Minute

// WithAuthBackoff sets how long the Client stops calling the API after a
// call ended with HTTP 401 (from the API or from the IAM login), default
// DefaultAuthBackoff. The API locks an AK/SK after five signature failures
// in a row, so a wrong key, token or password must not be tried again by
// every call. Non-positive values keep the default.
func WithAuthBackoff(d time.Duration) Option {
	return func(c *Client) {
		if d > 0 {
			c.authBackoff = d
		}
	}
}

// WithClock sets the clock the Client times its authentication backoff with
// (default time.Now); meant for tests.
func WithClock(now func() time.Time) Option {
	return func(c *Client) {
		if now != nil {
			c.now = now
		}
	}
}

// AuthBackoffError is the error of a call the Client did not send at all
// because an earlier call's credentials were refused with HTTP 401 less than
// the authentication backoff ago (see WithAuthBackoff), or because, that
// time being over, another call is trying them again right now. It wraps that
// refusal, so errors.As still finds the *APIError and its Code (e.g.
// APIG.0301).
type AuthBackoffError struct {
	Err      *APIError // the 401 answer that started the backoff
	FailedAt time.Time // when that answer was received
	RetryAt  time.Time // the first call at or after this time is sent again
	// Checking is set when the backoff is over but another call is
	// checking the credentials right now; calls are refused until it ends.
	Checking bool
}

// Error says what failed, when, and when the client will try again; it
// never contains credentials.
func (e *AuthBackoffError) Error() string {
	code := e.Err.Code
	if code == "" {
		code = fmt.Sprintf("HTTP %d", e.Err.Status)
	}
	msg := e.Err.Message
	if msg == "" {
		msg = "(no message)"
	}
	s := fmt.Sprintf("authentication failed at %s (%s: %s); ", clockUTC(e.FailedAt), code, msg)
	if e.Checking {
		return s + "another call is checking the credentials again right now, not trying twice at once to avoid locking them"
	}
	return s + fmt.Sprintf("not trying again before %s to avoid locking the credentials", clockUTC(e.RetryAt))
}

// Unwrap returns the remembered *APIError.
func (e *AuthBackoffError) Unwrap() error { return e.Err }

func clockUTC(t time.Time) string { return t.UTC().Format("15:04:05") + " UTC" }

// authBreaker remembers the last credential failure of a Client. While it is
// open every call is refused without I/O; once the backoff has passed, one
// call at a time (the probe) is let through: its success closes the breaker,
// a 401 opens it again, and any other outcome lets the next call probe.
type authBreaker struct {
	mu       sync.Mutex
	err      *APIError // nil: closed
	failedAt time.Time
	retryAt  time.Time
	probing  bool
}

// enter decides whether a call may be sent at now. It returns whether the
// call is the probe, or the error to fail the call with.
func (b *authBreaker) enter(now time.Time) (probe bool, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err == nil {
		return false, nil
	}
	if now.Before(b.retryAt) || b.probing {
		return false, &AuthBackoffError{Err: b.err, FailedAt: b.failedAt, RetryAt: b.retryAt, Checking: !now.Before(b.retryAt)}
	}
	b.probing = true
	return true, nil
}

// leave records the outcome err of a call that enter let through.
func (b *authBreaker) leave(probe bool, err error, now time.Time, backoff time.Duration) {
	var apiErr *APIError
	unauthorized := errors.As(err, &apiErr) && apiErr.Status == http.StatusUnauthorized
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case unauthorized:
		// Also for calls sent before the breaker opened: the latest
		// refusal counts.
		b.err, b.failedAt, b.retryAt = apiErr, now, now.Add(backoff)
	case err == nil && probe:
		b.err, b.failedAt, b.retryAt = nil, time.Time{}, time.Time{}
	}
	// A call that began before the breaker opened proves nothing by
	// succeeding; a probe that failed otherwise (5xx, timeout, cancelled)
	// hands the check on to the next call.
	if probe {
		b.probing = false
	}
}
