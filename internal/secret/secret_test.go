package secret

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

func TestSecretNeverPrints(t *testing.T) {
	const value = "xoxb-very-secret-value"
	s := Secret(value)
	var buf bytes.Buffer
	log := zerolog.New(&buf)
	log.Info().Interface("cfg", struct{ Token Secret }{s}).Stringer("tok", s).Msg("start")
	j, _ := json.Marshal(map[string]Secret{"t": s})
	outs := map[string]string{
		"%v":      fmt.Sprintf("%v", s),
		"%s":      fmt.Sprintf("%s", s), //lint:ignore S1025 the verb itself is under test
		"%#v":     fmt.Sprintf("%#v", s),
		"%+v":     fmt.Sprintf("%+v", struct{ T Secret }{s}),
		"json":    string(j),
		"zerolog": buf.String(),
	}
	for name, out := range outs {
		if strings.Contains(out, value) {
			t.Errorf("%s rendering leaks the secret: %q", name, out)
		}
		if !strings.Contains(out, Redacted) {
			t.Errorf("%s rendering = %q, want it to contain %q", name, out, Redacted)
		}
	}
	if got := s.Reveal(); got != value {
		t.Errorf("Reveal() = %q, want %q", got, value)
	}
}
