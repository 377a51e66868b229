package upgrade

import (
	"fmt"
	"net/http"
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
