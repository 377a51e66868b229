package upgrade

import (
	"encoding/json"
	"testing"
)

// flexString's shortcut for strings without escapes decodes exactly what
// encoding/json decodes.
func TestFlexStringMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		`""`, `"abc"`, `"a b\tc"`, `"caf\u00e9"`, `"café"`, `"\"quoted\""`, `"back\\slash"`, `"line\nbreak"`,
		"\"bad \xff utf-8\"", `"\ud800"`, `"emoji 😀"`, `"<&>"`, ` "padded" `,
	} {
		var want string
		if err := json.Unmarshal([]byte(in), &want); err != nil {
			t.Fatalf("json.Unmarshal(%q): %v", in, err)
		}
		var got flexString
		if err := got.UnmarshalJSON([]byte(in)); err != nil {
			t.Errorf("UnmarshalJSON(%q): %v", in, err)
			continue
		}
		if string(got) != want {
			t.Errorf("UnmarshalJSON(%q): got %q, want %q", in, got, want)
		}
	}
}

func FuzzFlexString(f *testing.F) {
	for _, s := range []string{"abc", "café", "a\"b", "a\\b", "\xff", "\u2028"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		in, _ := json.Marshal(s)
		var want string
		if err := json.Unmarshal(in, &want); err != nil {
			t.Fatal(err)
		}
		var got flexString
		if err := got.UnmarshalJSON(in); err != nil || string(got) != want {
			t.Errorf("UnmarshalJSON(%s): got %q, %v; want %q", in, got, err, want)
		}
		// Raw bytes (not Marshal's output) as a JSON string too.
		raw := []byte(`"` + s + `"`)
		if json.Valid(raw) {
			_ = json.Unmarshal(raw, &want)
			if err := got.UnmarshalJSON(raw); err != nil || string(got) != want {
				t.Errorf("UnmarshalJSON(%q): got %q, %v; want %q", raw, got, err, want)
			}
		}
	})
}
