// Package secret holds credentials in a type that refuses to print itself, so
// a token, password or key never reaches a log line or a Slack message by
// accident (fmt, zerolog and encoding/json all see "[redacted]").
package secret

// Redacted is what every rendering of a Secret shows.
const Redacted = "[redacted]"

// Secret is a credential read from the environment. Use Reveal to hand the
// real value to the code that must send it; everything else sees Redacted.
type Secret string

// Decode fills a Secret from the text of a variable (encoding.TextUnmarshaler-like).
func (s *Secret) Decode(value string) error {
	*s = Secret(value)
	return nil
}

// Reveal returns the credential itself, for the one place that sends it.
func (s Secret) Reveal() string { return string(s) }

// Set reports whether a value was given.
func (s Secret) Set() bool { return s != "" }

// String implements fmt.Stringer and never shows the value.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return Redacted
}

// GoString implements fmt.GoStringer for %#v.
func (s Secret) GoString() string { return s.String() }

// MarshalText implements encoding.TextMarshaler (JSON, zerolog's Interface).
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
