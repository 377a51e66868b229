package patch

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

func TestParseWindow(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    Window
		str     string
		wantErr bool
	}{
		{in: "", want: Window{}, str: ""},
		{in: "  ", want: Window{}, str: ""},
		{in: "02:00-06:00", want: Window{2 * time.Hour, 6 * time.Hour}, str: "02:00-06:00"},
		{in: " 2:30 - 03:00 ", want: Window{150 * time.Minute, 3 * time.Hour}, str: "02:30-03:00"},
		{in: "22:00-02:00", want: Window{22 * time.Hour, 2 * time.Hour}, str: "22:00-02:00"},
		{in: "20:00-24:00", want: Window{20 * time.Hour, day}, str: "20:00-24:00"},
		{in: "24:00-02:00", wantErr: true},
		{in: "02:00-02:00", wantErr: true},
		{in: "02:00", wantErr: true},
		{in: "2:0-03:00", wantErr: true},
		{in: "02:60-03:00", wantErr: true},
		{in: "+2:00-03:00", wantErr: true},
		{in: "aa:bb-03:00", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseWindow(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("ParseWindow(%q): got error %v, want error %v", tc.in, err, tc.wantErr)
			}
			if tc.wantErr {
				return
			}
			if got != tc.want || got.String() != tc.str {
				t.Errorf("ParseWindow(%q): got %v (%q), want %v (%q)", tc.in, got, got.String(), tc.want, tc.str)
			}
		})
	}
}

// TestWindowAgreesWithUpgrade holds Contains to upgrade.InWindow, which
// made the plan, for every minute of a day (and the seconds around the
// edges).
func TestWindowAgreesWithUpgrade(t *testing.T) {
	t.Parallel()
	day0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	for _, s := range []string{"02:00-06:00", "22:00-02:00", "20:00-24:00", "00:00-00:30", "23:59-00:00", "9:15-9:45"} {
		w, err := ParseWindow(s)
		if err != nil {
			t.Fatalf("ParseWindow(%q): %v", s, err)
		}
		for m := range 24 * 60 {
			for _, sec := range []time.Duration{0, 59 * time.Second} {
				at := day0.Add(time.Duration(m)*time.Minute + sec)
				want, err := upgrade.InWindow(s, at)
				if err != nil {
					t.Fatalf("InWindow(%q): %v", s, err)
				}
				if got := w.Contains(at); got != want {
					t.Fatalf("%s.Contains(%s): got %v, want %v as upgrade.InWindow", s, at.Format("15:04:05"), got, want)
				}
				// NextOpen is at or after at, in the window, and the
				// window is closed on the whole minute before it.
				open := w.NextOpen(at)
				if open.Before(at) || !w.Contains(open) || (open != at && w.Contains(open.Add(-time.Minute))) {
					t.Fatalf("%s.NextOpen(%s) = %s: want the first open time at or after it", s, at.Format(time.RFC3339), open.Format(time.RFC3339))
				}
			}
		}
	}
}

func TestWindowNextOpen(t *testing.T) {
	t.Parallel()
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		window, now, want string
	}{
		{"02:00-03:00", "2026-03-01T01:00:00Z", "2026-03-01T02:00:00Z"},
		{"02:00-03:00", "2026-03-01T02:30:00Z", "2026-03-01T02:30:00Z"}, // open: now
		{"02:00-03:00", "2026-03-01T03:00:00Z", "2026-03-02T02:00:00Z"}, // the end is exclusive
		{"22:00-02:00", "2026-03-01T21:59:00Z", "2026-03-01T22:00:00Z"},
		{"22:00-02:00", "2026-03-01T01:59:00Z", "2026-03-01T01:59:00Z"},
		{"22:00-02:00", "2026-03-01T02:00:00Z", "2026-03-01T22:00:00Z"},
		{"00:00-01:00", "2026-12-31T23:00:00Z", "2027-01-01T00:00:00Z"},
		{"02:00-03:00", "2026-03-01T04:00:00+05:00", "2026-03-01T02:00:00Z"}, // 23:00Z the day before
		{"", "2026-03-01T04:00:00Z", "2026-03-01T04:00:00Z"},
	}
	for _, tc := range tests {
		t.Run(tc.window+"@"+tc.now, func(t *testing.T) {
			w, err := ParseWindow(tc.window)
			if err != nil {
				t.Fatal(err)
			}
			if got := w.NextOpen(at(tc.now)); !got.Equal(at(tc.want)) {
				t.Errorf("NextOpen: got %s, want %s", got.Format(time.RFC3339), tc.want)
			}
		})
	}
}

func TestWindowJSON(t *testing.T) {
	t.Parallel()
	w := Wave{Kind: KindWindow, Window: Window{22 * time.Hour, 2 * time.Hour}}
	raw, err := json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	var back Wave
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatalf("Unmarshal(%s): %v", raw, err)
	}
	if back.Window != w.Window {
		t.Errorf("round trip of %s: got window %v, want %v", raw, back.Window, w.Window)
	}
	raw, _ = json.Marshal(Wave{Kind: KindRest})
	if string(raw) != `{"kind":"rest","batches":null,"opens":"0001-01-01T00:00:00Z"}` {
		t.Errorf("a wave without a window: got %s, want no window field", raw)
	}
	if err := json.Unmarshal([]byte(`{"window":"25:00-26:00"}`), &back); err == nil {
		t.Errorf("Unmarshal of a bad window: got nil error, want one")
	}
}
