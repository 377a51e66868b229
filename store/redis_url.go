package store

import (
	"errors"
	"fmt"
	neturl "net/url"
	"strings"

	"github.com/redis/go-redis/v9"
)

// redactedRedisURL describes the database of a parsed URL without
// credentials or options: scheme, address and database number.
func redactedRedisURL(raw string, o *redis.Options) string {
	scheme, _, _ := strings.Cut(raw, "://")
	scheme = strings.ToLower(scheme)
	if o.Network == "unix" {
		return fmt.Sprintf("%s://%s?db=%d", scheme, o.Addr, o.DB)
	}
	return fmt.Sprintf("%s://%s/%d", scheme, o.Addr, o.DB)
}

// RedactURL renders a URL without credentials, query or fragment, for logs
// and messages (a redis:// store URL may carry a password).
func RedactURL(raw string) string {
	raw = stripUserinfo(raw)
	u, err := neturl.Parse(raw)
	if err != nil {
		return "(unparsable Redis URL)"
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u.String()
}

// scrubPassword returns err, or, if its message contains the password of
// raw (as written or percent-decoded), an error with the same message in
// which the password is replaced by "xxxxx" (which no longer wraps
// anything).
func scrubPassword(err error, raw string) error {
	pw := urlPassword(raw)
	if pw == "" {
		return err
	}
	forms := []string{pw}
	if dec, derr := neturl.PathUnescape(pw); derr == nil && dec != "" && dec != pw {
		forms = append(forms, dec)
	}
	msg := err.Error()
	for _, f := range forms {
		msg = strings.ReplaceAll(msg, f, "xxxxx")
	}
	if msg == err.Error() {
		return err
	}
	return errors.New(msg)
}

// urlPassword finds the password, as written, in the userinfo of raw
// without relying on raw being a valid URL.
func urlPassword(raw string) string {
	_, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return ""
	}
	// A host never contains "@", a password may contain "/", "?" or "#"
	// unescaped: the user information ends at the last "@".
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return ""
	}
	_, pw, _ := strings.Cut(rest[:at], ":")
	return pw
}

// stripUserinfo removes everything between "://" and the last "@", so no
// form of a password survives (net/url would split an unescaped one at
// "/", "?" or "#" and keep the rest in the host or path).
func stripUserinfo(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		rest = rest[at+1:]
	}
	return scheme + "://" + rest
}
