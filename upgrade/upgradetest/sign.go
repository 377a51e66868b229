package upgradetest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

// sdkDateLayout is the layout of the X-Sdk-Date header.
const sdkDateLayout = "20060102T150405Z"

// maxClockSkew is how far X-Sdk-Date may be from the fake's clock, as on the
// real gateway.
const maxClockSkew = 15 * time.Minute

// Signature computes the SDK-HMAC-SHA256 signature of a request from the
// published algorithm, independently of the vendor SDK: canonical request =
// method, URI path with a trailing '/', sorted query, sorted lowercase
// "name:value" headers for signedHeaders, the signed header names joined by
// ';', hex SHA-256 of the body; string to sign = "SDK-HMAC-SHA256\n" + date +
// "\n" + hex SHA-256 of the canonical request; signature = hex
// HMAC-SHA256(sk, string to sign). host is the Host header as sent.
func Signature(method, path string, query url.Values, header http.Header, host string, signedHeaders []string, body []byte, sk string) string {
	var cr strings.Builder
	cr.WriteString(method + "\n")
	cr.WriteString(canonicalURI(path) + "\n")
	cr.WriteString(canonicalQuery(query) + "\n")
	for _, h := range signedHeaders {
		v := strings.Join(header.Values(h), ",")
		if h == "host" {
			v = host
		}
		cr.WriteString(h + ":" + strings.TrimSpace(v) + "\n")
	}
	cr.WriteString("\n")
	cr.WriteString(strings.Join(signedHeaders, ";") + "\n")
	if header.Get("X-Sdk-Content-Sha256") == "UNSIGNED-PAYLOAD" {
		cr.WriteString("UNSIGNED-PAYLOAD")
	} else {
		sum := sha256.Sum256(body)
		cr.WriteString(hex.EncodeToString(sum[:]))
	}
	crSum := sha256.Sum256([]byte(cr.String()))
	sts := "SDK-HMAC-SHA256\n" + header.Get("X-Sdk-Date") + "\n" + hex.EncodeToString(crSum[:])
	m := hmac.New(sha256.New, []byte(sk))
	m.Write([]byte(sts))
	return hex.EncodeToString(m.Sum(nil))
}

// verifyAKSK checks an Authorization: SDK-HMAC-SHA256 header against ak/sk.
// The error text is safe to return to the client: it names no secret.
func verifyAKSK(r *http.Request, body []byte, ak, sk string, now time.Time) error {
	auth := r.Header.Get("Authorization")
	rest, ok := strings.CutPrefix(auth, "SDK-HMAC-SHA256 ")
	if !ok {
		return errors.New("no SDK-HMAC-SHA256 authorization")
	}
	fields := map[string]string{}
	for _, part := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		fields[k] = v
	}
	if fields["Access"] != ak {
		return errors.New("unknown access key")
	}
	date, err := time.Parse(sdkDateLayout, r.Header.Get("X-Sdk-Date"))
	if err != nil {
		return errors.New("missing or malformed X-Sdk-Date")
	}
	if d := now.Sub(date); d > maxClockSkew || d < -maxClockSkew {
		return fmt.Errorf("X-Sdk-Date is %s away from the server clock", d.Round(time.Second))
	}
	signed := strings.Split(fields["SignedHeaders"], ";")
	if fields["SignedHeaders"] == "" || !sort.StringsAreSorted(signed) {
		return errors.New("malformed SignedHeaders")
	}
	for _, h := range []string{"x-sdk-date", "host"} {
		if !contains(signed, h) {
			return fmt.Errorf("header %s is not signed", h)
		}
	}
	want := Signature(r.Method, r.URL.Path, r.URL.Query(), r.Header, r.Host, signed, body, sk)
	if !hmac.Equal([]byte(want), []byte(fields["Signature"])) {
		return errors.New("signature mismatch")
	}
	return nil
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func canonicalURI(path string) string {
	segs := strings.Split(path, "/")
	for i, s := range segs {
		segs[i] = escape(s)
	}
	p := strings.Join(segs, "/")
	if !strings.HasSuffix(p, "/") {
		p += "/"
	}
	return p
}

func canonicalQuery(q url.Values) string {
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		vs := append([]string(nil), q[k]...)
		sort.Strings(vs)
		for _, v := range vs {
			parts = append(parts, escape(k)+"="+escape(v))
		}
	}
	return strings.Join(parts, "&")
}

// escape percent-encodes everything but RFC 3986 unreserved characters.
func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}
