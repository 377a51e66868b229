package bot

import (
	"strings"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/patch"
)

// A window wave whose opening passed unsent (the bot was down, a canary
// held it) shows the next opening and says it was missed, never "opens in
// -7h0m0s" (issue 19).
func TestMissedWindowShowsNextOpening(t *testing.T) {
	w, err := patch.ParseWindow("02:00-04:00")
	if err != nil {
		t.Fatal(err)
	}
	opens := time.Date(2026, 12, 4, 2, 0, 0, 0, time.UTC)
	wave := patch.Wave{Kind: patch.KindWindow, Window: w, Opens: opens}
	tests := []struct {
		name string
		now  time.Time
		want string
		not  string
	}{
		{"ahead", opens.Add(-90 * time.Minute), "opens in 1h30m", "missed"},
		{"open now", opens.Add(30 * time.Minute), "open now", "missed"},
		{"missed", opens.Add(7 * time.Hour), "missed its window at 02:00 UTC on 4 Dec; next opens in 17h", "in -"},
		{"missed, open again", opens.Add(24*time.Hour + 10*time.Minute), "missed its window at 02:00 UTC on 4 Dec; next open now", "opens in"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := strings.Join(waveSummary(patch.Rollout{Waves: []patch.Wave{wave}}, tt.now), "\n")
			if !strings.Contains(got, tt.want) || strings.Contains(got, tt.not) {
				t.Errorf("got %q, want it to contain %q and not %q", got, tt.want, tt.not)
			}
		})
	}
}
