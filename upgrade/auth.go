package upgrade

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"time"

	"github.com/huaweicloud/huaweicloud-sdk-go-v3/core/auth/signer"
	"github.com/huaweicloud/huaweicloud-sdk-go-v3/core/request"
)

// Authenticator adds credentials to every request the Client sends, as an
// http.RoundTripper wrapper, so that callers never touch headers.
type Authenticator interface {
	// Wrap returns a RoundTripper that authenticates each request and passes it to next.
	Wrap(next http.RoundTripper) http.RoundTripper
}

// authError is a failure to authenticate a request that is not an answer of
// the API (e.g. the signer refused the keys). It is never retried.
type authError struct{ err error }

func (e *authError) Error() string { return e.err.Error() }
func (e *authError) Unwrap() error { return e.err }

// roundTripFunc adapts a function to http.RoundTripper.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TokenAuth authenticates with a ready IAM token, sent as X-Auth-Token. The
// token is not renewed: when it expires the API answers 401 (APIG.0301).
func TokenAuth(token string) Authenticator { return tokenAuth{token: token} }

type tokenAuth struct{ token string }

func (a tokenAuth) Wrap(next http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		r2 := r.Clone(r.Context())
		r2.Header.Set("X-Auth-Token", a.token)
		return next.RoundTrip(r2)
	})
}

// String keeps the token out of logs and %v output.
func (a tokenAuth) String() string { return "TokenAuth([redacted])" }

// GoString keeps the token out of %#v output.
func (a tokenAuth) GoString() string { return a.String() }

// AKSKAuth signs every request with an access key and secret key
// (SDK-HMAC-SHA256, the API gateway's AK/SK scheme) using the vendor SDK's
// signer. The headers X-Sdk-Date and Authorization are added; the body is
// read for hashing and restored.
func AKSKAuth(ak, sk string) Authenticator {
	return akskAuth{ak: ak, sk: sk, now: time.Now}
}

type akskAuth struct {
	ak, sk string
	now    func() time.Time
}

// String keeps the keys out of logs and %v output.
func (a akskAuth) String() string { return "AKSKAuth([redacted])" }

// GoString keeps the keys out of %#v output.
func (a akskAuth) GoString() string { return a.String() }

func (a akskAuth) Wrap(next http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		body, err := readBody(r)
		if err != nil {
			return nil, &authError{fmt.Errorf("aksk sign: read body: %w", err)}
		}
		r2 := r.Clone(r.Context())
		setBody(r2, body)
		if r2.Header.Get(signer.HeaderXDate) == "" {
			r2.Header.Set(signer.HeaderXDate, a.now().UTC().Format(signer.BasicDateFormat))
		}
		if err := signAKSK(r2, body, a.ak, a.sk); err != nil {
			return nil, &authError{err}
		}
		return next.RoundTrip(r2)
	})
}

// signAKSK translates r into the vendor request type, signs it and copies the
// resulting headers back onto r. The vendor signer signs every header it is
// given (except Content-Type), so it is given exactly what will be sent,
// plus Host, which net/http adds on the wire.
func signAKSK(r *http.Request, body []byte, ak, sk string) error {
	if ak == "" || sk == "" {
		return errors.New("aksk sign: access key or secret key is empty")
	}
	b := request.NewHttpRequestBuilder().
		WithEndpoint(r.URL.Scheme + "://" + r.URL.Host).
		WithPath(r.URL.Path).
		WithMethod(r.Method)
	for k, vs := range r.URL.Query() {
		// The signer only canonicalises reflect.Values; a slice keeps repeated keys.
		b.AddQueryParam(k, reflect.ValueOf(vs))
	}
	for k, vs := range r.Header {
		b.AddHeaderParam(http.CanonicalHeaderKey(k), strings.Join(vs, ","))
	}
	host := r.Host
	if host == "" {
		host = r.URL.Host
	}
	b.AddHeaderParam("Host", host)
	if len(body) > 0 {
		// A string body is hashed verbatim; anything else would be re-encoded.
		b.WithBody("", string(body))
	}
	vreq := b.Build()
	hdrs, err := signer.Sign(vreq, ak, sk)
	if err != nil {
		// The vendor's messages name only which key is missing, never its value.
		return fmt.Errorf("aksk sign: %w", err)
	}
	for k, v := range hdrs {
		r.Header.Set(k, v)
	}
	// Non-JSON bodies are signed as UNSIGNED-PAYLOAD via this header, which
	// the signer adds to its own request; it must be sent too.
	if v, ok := vreq.GetHeaderParams()["X-Sdk-Content-Sha256"]; ok {
		r.Header.Set("X-Sdk-Content-Sha256", v)
	}
	return nil
}

// readBody returns r's body without losing it: through GetBody when the
// request can be replayed, else by reading (and closing) it.
func readBody(r *http.Request) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	if r.GetBody != nil {
		rc, err := r.GetBody()
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil {
			return nil, err
		}
		// A RoundTripper must close the body it was given.
		_ = r.Body.Close()
		return b, nil
	}
	defer r.Body.Close()
	return io.ReadAll(r.Body)
}

// setBody gives r a replayable body holding b.
func setBody(r *http.Request, b []byte) {
	if b == nil {
		r.Body = nil
		r.GetBody = nil
		r.ContentLength = 0
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	r.ContentLength = int64(len(b))
}
