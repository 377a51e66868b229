package upgrade

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Outcome is what a failed call that may start work (BatchUpgrade) did to
// the instances it named, as far as the bot can know.
type Outcome int

// The outcomes of a failed batch call. The zero value is OutcomeUnknown, so
// a Failure that was never classified never claims that nothing started.
const (
	// OutcomeUnknown: the request may have reached GeminiDB and the patch
	// may have started (an HTTP 5xx, an API gateway code, a timeout, a reset
	// or a truncated answer, a redirect). Check the console; never retry it.
	OutcomeUnknown Outcome = iota
	// OutcomeRefused: GeminiDB answered with an HTTP 4xx and its own error
	// code; nothing was started.
	OutcomeRefused
	// OutcomeNotSent: no byte of the request reached GeminiDB (see
	// NotSentError); nothing was started.
	OutcomeNotSent
)

// String names the outcome for logs and metrics: "unknown", "refused", "not_sent".
func (o Outcome) String() string {
	switch o {
	case OutcomeRefused:
		return "refused"
	case OutcomeNotSent:
		return "not_sent"
	}
	return "unknown"
}

// Failure is a failed call classified by Classify: its Outcome and what
// there is to show about it. Nothing in it is a secret.
type Failure struct {
	Outcome Outcome
	// Status is the HTTP status of the answer, or 0 when there was none.
	Status int
	// Code is the error_code of the answer verbatim (e.g. DBS.200011,
	// APIG.0201), "HTTP 502" for an answer without one, or "" without an answer.
	Code string
	// Message is the answer's error message verbatim, or, without an
	// answer, what happened (e.g. "no answer in time"), for people.
	Message string
	// Backoff is set when the call was refused without a request because
	// GeminiDB refused the credentials a moment ago (OutcomeNotSent).
	Backoff *AuthBackoffError
	// Redirect is set when the answer was a redirect the client refused to
	// follow (OutcomeUnknown).
	Redirect *RedirectError
}

// String renders the failure for logs: "unknown: HTTP 504 APIG.0201: Backend timeout.".
func (f Failure) String() string {
	s := f.Outcome.String()
	if f.Status != 0 {
		s += fmt.Sprintf(": HTTP %d", f.Status)
	}
	if f.Code != "" && f.Code != fmt.Sprintf("HTTP %d", f.Status) {
		s += " " + f.Code
	}
	if f.Message != "" {
		s += ": " + f.Message
	}
	return s
}

// Classify tells what a failed BatchUpgrade (or any Client call) did:
//   - OutcomeNotSent when NotSent(err): nothing reached GeminiDB. This is
//     asked first, since a refused IAM login is an *APIError too, but it came
//     before the call.
//   - OutcomeRefused for an *APIError with a 4xx status and a code of
//     GeminiDB's own (DBS.…), and for the API gateway's refusals that are
//     made before anything is forwarded (see gatewayRefusal: no such API,
//     authentication, throttling).
//   - OutcomeUnknown for everything else: any 5xx whatever its code
//     (500 DBS.200998 included), any other gateway code (APIG.0201
//     "Backend timeout" at 504, and at 4xx too: the gateway gives that code
//     to failures on its way to the backend), a 4xx without a code (whoever
//     answered is not known to have refused), a redirect, a timeout, a reset
//     or a truncated body after the request was written.
//
// Classify(nil) is OutcomeUnknown with no code: callers classify only errors.
func Classify(err error) Failure {
	var f Failure
	var backoff *AuthBackoffError
	var redirect *RedirectError
	var ae *APIError
	switch {
	case err == nil:
		return Failure{Outcome: OutcomeUnknown}
	case NotSent(err):
		f.Outcome = OutcomeNotSent
		if errors.As(err, &backoff) {
			f.Backoff = backoff
			f.Code, f.Message = backoff.Err.Code, "GeminiDB refused the credentials a moment ago; the client waits before trying them again"
			if f.Code == "" {
				f.Code = fmt.Sprintf("HTTP %d", backoff.Err.Status)
			}
			return f
		}
		f.Message = err.Error()
		return f
	case errors.As(err, &redirect):
		f.Outcome, f.Redirect, f.Status = OutcomeUnknown, redirect, redirect.Status
		f.Code = fmt.Sprintf("HTTP %d", redirect.Status)
		f.Message = "redirect refused (" + redirect.Error() + ")"
		return f
	case errors.As(err, &ae):
		f.Status, f.Code, f.Message = ae.Status, ae.Code, ae.Message
		if f.Code == "" {
			f.Code = fmt.Sprintf("HTTP %d", ae.Status)
		}
		if f.Message == "" {
			f.Message = http.StatusText(ae.Status)
		}
		f.Outcome = OutcomeUnknown
		if refusedAnswer(ae) {
			f.Outcome = OutcomeRefused
		}
		return f
	case errors.Is(err, context.DeadlineExceeded):
		f.Message = "no answer in time"
	case errors.Is(err, context.Canceled):
		f.Message = "the call was cancelled while it was under way"
	default:
		f.Message = "the connection failed during the call: " + err.Error()
	}
	f.Outcome = OutcomeUnknown
	return f
}

// refusedAnswer reports whether an HTTP error answer certainly started
// nothing: a 4xx carrying GeminiDB's own code, or one of the API gateway's
// refusals made before forwarding.
func refusedAnswer(ae *APIError) bool {
	if ae.Status < 400 || ae.Status >= 500 || ae.Code == "" {
		return false
	}
	if isGatewayCode(ae.Code) {
		return gatewayRefusal(ae.Code)
	}
	return true
}

// isGatewayCode reports whether code is the API gateway's (APIG.… or
// APIGW.…) rather than the service's.
func isGatewayCode(code string) bool {
	c := strings.ToUpper(code)
	return strings.HasPrefix(c, "APIG.") || strings.HasPrefix(c, "APIGW.")
}

// gatewayRefusal reports whether a gateway code (seen with a 4xx) names a
// refusal the gateway makes before it forwards anything, per the API
// gateway's published error codes: APIG.0101 (the API or route does not
// exist) and the 03xx family, authentication and throttling (APIG.0301 bad
// token or signature, APIG.0307 token to renew, APIG.0308 throttled). Every
// other gateway code is unknown: 02xx covers both request errors and the
// backend's timeouts and failures (APIG.0201 "Backend timeout", APIG.0202
// "Backend unavailable"), and no other is documented as harmless.
func gatewayRefusal(code string) bool {
	_, num, ok := strings.Cut(strings.ToUpper(code), ".")
	if !ok || len(num) != 4 {
		return false
	}
	return num == "0101" || strings.HasPrefix(num, "03")
}
