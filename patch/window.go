package patch

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// day is the length of a UTC day (Go's time has no leap seconds).
const day = 24 * time.Hour

// Window is a daily maintenance window in UTC, from Start (inclusive) to End
// (exclusive), both offsets from midnight; an End before Start crosses
// midnight ("22:00-02:00"). The zero Window means no window: always open.
//
// It reads and writes itself as "HH:MM-HH:MM", as GeminiDB shows it, and
// judges times as upgrade.InWindow does (a test holds them to that).
type Window struct {
	Start, End time.Duration
}

// ParseWindow parses "HH:MM-HH:MM" (UTC; "24:00" is accepted as an end).
// An empty or blank string is the zero Window (none).
func ParseWindow(s string) (Window, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Window{}, nil
	}
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return Window{}, fmt.Errorf("maintenance window %q: want HH:MM-HH:MM", s)
	}
	start, err := parseClock(a, false)
	if err != nil {
		return Window{}, fmt.Errorf("maintenance window %q: start: %w", s, err)
	}
	end, err := parseClock(b, true)
	if err != nil {
		return Window{}, fmt.Errorf("maintenance window %q: end: %w", s, err)
	}
	if start == end {
		return Window{}, fmt.Errorf("maintenance window %q: start equals end", s)
	}
	return Window{Start: start, End: end}, nil
}

// parseClock parses "HH:MM" (or "H:MM") into an offset from midnight.
func parseClock(s string, isEnd bool) (time.Duration, error) {
	s = strings.TrimSpace(s)
	hh, mm, ok := strings.Cut(s, ":")
	if !ok || len(hh) < 1 || len(hh) > 2 || len(mm) != 2 || strings.ContainsAny(s, "+- ") {
		return 0, fmt.Errorf("%q is not HH:MM", s)
	}
	h, err1 := strconv.Atoi(hh)
	m, err2 := strconv.Atoi(mm)
	switch {
	case err1 != nil || err2 != nil || m > 59:
		return 0, fmt.Errorf("%q is not HH:MM", s)
	case h == 24 && m == 0 && isEnd:
		return day, nil
	case h > 23:
		return 0, fmt.Errorf("%q is not HH:MM", s)
	}
	return time.Duration(h)*time.Hour + time.Duration(m)*time.Minute, nil
}

// IsZero reports whether w is no window at all.
func (w Window) IsZero() bool { return w == Window{} }

// Contains reports whether t falls in w. The zero Window contains every time.
func (w Window) Contains(t time.Time) bool {
	if w.IsZero() {
		return true
	}
	u := t.UTC()
	since := u.Sub(midnight(u))
	if w.Start < w.End {
		return since >= w.Start && since < w.End
	}
	return since >= w.Start || since < w.End
}

// NextOpen returns t when w contains it, and otherwise the next time after
// t at which w opens (today's or tomorrow's start, UTC).
func (w Window) NextOpen(t time.Time) time.Time {
	if w.Contains(t) {
		return t
	}
	u := t.UTC()
	open := midnight(u).Add(w.Start)
	if !open.After(u) {
		open = open.Add(day)
	}
	return open
}

// midnight is the start of t's UTC day.
func midnight(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// String returns w as "HH:MM-HH:MM", or "" for the zero Window.
func (w Window) String() string {
	if w.IsZero() {
		return ""
	}
	clock := func(d time.Duration) string {
		return fmt.Sprintf("%02d:%02d", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return clock(w.Start) + "-" + clock(w.End)
}

// MarshalText writes w as String does.
func (w Window) MarshalText() ([]byte, error) { return []byte(w.String()), nil }

// UnmarshalText reads w as ParseWindow does.
func (w *Window) UnmarshalText(b []byte) error {
	v, err := ParseWindow(string(b))
	if err != nil {
		return err
	}
	*w = v
	return nil
}

// NextOpening returns when wave w goes at the earliest, seen at now: its
// planned opening (Opens) while that is still ahead; once it has passed
// without the wave being started, missed is set and at is the window's
// next opening (now itself while the window is open). A missed window is
// never shown as a time in the past ("opens in -7h").
func (w Wave) NextOpening(now time.Time) (at time.Time, missed bool) {
	if !w.Started.IsZero() || w.Opens.After(now) {
		return w.Opens, false
	}
	if w.Window.IsZero() {
		return now, false
	}
	// Missed only if the planned opening's window ended unsent: a window
	// open since Opens is not missed yet, merely due.
	missed = !w.Window.Contains(now) || now.Sub(w.Opens) >= day
	return w.Window.NextOpen(now), missed
}
