package bot

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/patch"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// A rollout of 200 instances in waves of 10 is shown in a few lines: the
// wave it is at, the next one, and the error budget used.
func TestWaveProgress(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)
	var refs []string
	res := upgrade.Resolution{Found: map[string]upgrade.Instance{}}
	for i := range 200 {
		id := fmt.Sprintf("i-%03d", i)
		refs = append(refs, id)
		res.Found[id] = upgrade.Instance{ID: id, Name: id, Status: "normal", Engine: "cassandra", Version: "3.11", PatchAvailable: true}
	}
	p := upgrade.NewPlan(refs, res, upgrade.PlanOptions{Now: now})
	opts := patch.Options{MaxErrors: 2}.Guarded(200, 10)
	ro := patch.Rollout{Options: opts, Waves: patch.Waves(p, opts, now)}
	if got := planWavesText(ro); !strings.Contains(got, "canary of 1 instance first, then 199 instances in 20 waves of at most 10") || !strings.Contains(got, "up to 2 instances failed or unknown") {
		t.Errorf("plan text: %q", got)
	}
	for k := range 3 {
		ro.Waves[k].Started, ro.Waves[k].Ended = now, now
	}
	raw, err := json.Marshal(ro)
	if err != nil {
		t.Fatal(err)
	}
	r := store.Request{ID: "r-1", State: store.Submitted, Rollout: raw}
	lines := waveProgress(r, ro, &Counts{Running: 10, Completed: 10, Failed: 1})
	want := []string{"wave 3 of 21: 10 instances, running", "next: wave 4 of 21, 10 instances, once every job before it ended", "errors: 1 of 2 allowed (--max-errors 2)"}
	if strings.Join(lines, "|") != strings.Join(want, "|") {
		t.Errorf("waveProgress:\n got %q\nwant %q", lines, want)
	}
	ro.Accepted = []string{"i-001", "i-002"}
	lines = waveProgress(r, ro, &Counts{Failed: 3})
	if got := lines[len(lines)-1]; got != "errors: 1 of 2 allowed (--max-errors 2), 2 more accepted by Continue" {
		t.Errorf("budget after a Continue: %q", got)
	}
}
