package patch

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// inst is a patchable instance.
func inst(id, engine, window string) upgrade.Instance {
	return upgrade.Instance{ID: id, Name: "name-" + id, Status: "normal", Engine: engine, Version: "4.0",
		WholeVersion: "4.0.1", PatchAvailable: true, MaintenanceWindow: window}
}

// planFor is the plan upgrade.NewPlan makes for instances at now.
func planFor(now time.Time, force bool, ins ...upgrade.Instance) upgrade.Plan {
	res := upgrade.Resolution{Found: map[string]upgrade.Instance{}}
	var refs []string
	for _, in := range ins {
		refs = append(refs, in.ID)
		res.Found[in.ID] = in
	}
	return upgrade.NewPlan(refs, res, upgrade.PlanOptions{Force: force, Now: now})
}

// shape is a wave as the tests compare it: kind, window, opening (HH:MM,
// or "+1d HH:MM" the next day) and batches as "engine:id,id".
type shape struct {
	Kind    Kind
	Window  string
	Opens   string
	Batches []string
}

func shapes(ws []Wave, now time.Time) []shape {
	out := []shape{}
	for _, w := range ws {
		s := shape{Kind: w.Kind, Window: w.Window.String(), Opens: w.Opens.Format("15:04")}
		if w.Opens.YearDay() != now.YearDay() {
			s.Opens = "+1d " + s.Opens
		}
		for _, b := range w.Batches {
			s.Batches = append(s.Batches, b.Engine+":"+strings.Join(b.InstanceIDs, ","))
		}
		out = append(out, s)
	}
	return out
}

func TestWaves(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 1, 0, 0, 0, time.UTC) // 01:00 UTC
	many := func(n int, engine, window string) []upgrade.Instance {
		var out []upgrade.Instance
		for i := range n {
			out = append(out, inst(fmt.Sprintf("%s%d", engine[:1], i), engine, window))
		}
		return out
	}
	tests := []struct {
		name  string
		ins   []upgrade.Instance
		force bool
		opts  Options
		want  []shape
	}{
		{
			name: "no options: one wave of everything in the window",
			ins:  []upgrade.Instance{inst("a", "cassandra", ""), inst("b", "influxdb", "00:00-02:00"), inst("c", "cassandra", "03:00-04:00")},
			want: []shape{{KindRest, "", "01:00", []string{"cassandra:a", "influxdb:b"}}},
		},
		{
			name: "batches of at most ten per engine",
			ins:  append(many(12, "cassandra", ""), many(3, "influxdb", "")...),
			want: []shape{{KindRest, "", "01:00", []string{"cassandra:c0,c1,c2,c3,c4,c5,c6,c7,c8,c9", "cassandra:c10,c11", "influxdb:i0,i1,i2"}}},
		},
		{
			name: "canary first, then the rest",
			ins:  []upgrade.Instance{inst("a", "cassandra", ""), inst("b", "influxdb", ""), inst("c", "cassandra", ""), inst("d", "cassandra", "")},
			opts: Options{Canary: 2},
			want: []shape{
				{KindCanary, "", "01:00", []string{"cassandra:a", "influxdb:b"}},
				{KindRest, "", "01:00", []string{"cassandra:c,d"}},
			},
		},
		{
			name: "a canary as large as the plan leaves no rest",
			ins:  []upgrade.Instance{inst("a", "cassandra", ""), inst("b", "cassandra", "")},
			opts: Options{Canary: 5},
			want: []shape{{KindCanary, "", "01:00", []string{"cassandra:a,b"}}},
		},
		{
			name: "wait for window: scheduled by opening, across midnight",
			ins: []upgrade.Instance{
				inst("late", "cassandra", "23:00-01:00"), // closed at 01:00: opens 23:00
				inst("now", "cassandra", "00:30-02:00"),  // open
				inst("soon", "influxdb", "03:00-04:00"),
				inst("none", "cassandra", ""),
				inst("soon2", "cassandra", "3:00-04:00"),
				inst("past", "cassandra", "00:00-00:30"), // opens tomorrow
			},
			opts: Options{WaitForWindow: true},
			want: []shape{
				{KindRest, "00:30-02:00", "01:00", []string{"cassandra:now"}},
				{KindRest, "", "01:00", []string{"cassandra:none"}},
				{KindWindow, "03:00-04:00", "03:00", []string{"influxdb:soon", "cassandra:soon2"}},
				{KindWindow, "23:00-01:00", "23:00", []string{"cassandra:late"}},
				{KindWindow, "00:00-00:30", "+1d 00:00", []string{"cassandra:past"}},
			},
		},
		{
			name: "the canary goes in the first window",
			ins: []upgrade.Instance{
				inst("a", "cassandra", "05:00-06:00"),
				inst("b", "cassandra", "03:00-04:00"),
				inst("c", "cassandra", "03:00-04:00"),
				inst("d", "cassandra", "05:00-06:00"),
			},
			opts: Options{Canary: 1, WaitForWindow: true},
			want: []shape{
				{KindCanary, "03:00-04:00", "03:00", []string{"cassandra:b"}},
				{KindWindow, "03:00-04:00", "03:00", []string{"cassandra:c"}},
				{KindWindow, "05:00-06:00", "05:00", []string{"cassandra:a,d"}},
			},
		},
		{
			name: "a canary spanning two windows is two canary waves",
			ins:  []upgrade.Instance{inst("a", "cassandra", "05:00-06:00"), inst("b", "cassandra", "00:00-02:00"), inst("c", "cassandra", "05:00-06:00")},
			opts: Options{Canary: 2, WaitForWindow: true},
			want: []shape{
				{KindCanary, "00:00-02:00", "01:00", []string{"cassandra:b"}},
				{KindCanary, "05:00-06:00", "05:00", []string{"cassandra:a"}},
				{KindWindow, "05:00-06:00", "05:00", []string{"cassandra:c"}},
			},
		},
		{
			name:  "a forced plan sends everything at once",
			ins:   []upgrade.Instance{inst("a", "cassandra", "05:00-06:00"), inst("b", "cassandra", "")},
			force: true,
			opts:  Options{WaitForWindow: true},
			want:  []shape{{KindRest, "", "01:00", []string{"cassandra:a,b"}}},
		},
		{
			name: "instances the plan skips for other reasons stay out",
			ins: []upgrade.Instance{
				{ID: "busy", Engine: "cassandra", Status: "rebooting", PatchAvailable: true, MaintenanceWindow: "05:00-06:00"},
				inst("ok", "cassandra", "05:00-06:00"),
			},
			opts: Options{WaitForWindow: true},
			want: []shape{{KindWindow, "05:00-06:00", "05:00", []string{"cassandra:ok"}}},
		},
		{
			name: "nothing to send",
			ins:  []upgrade.Instance{inst("a", "cassandra", "05:00-06:00")},
			want: []shape{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := planFor(now, tc.force, tc.ins...)
			got := shapes(Waves(p, tc.opts, now), now)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got waves\n%+v\nwant\n%+v", got, tc.want)
			}
		})
	}
}

// TestWavesWithoutOptionsArePlanBatches: without options a request goes
// out exactly as the plan's batches, as before waves existed.
func TestWavesWithoutOptionsArePlanBatches(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 1, 0, 0, 0, time.UTC)
	var ins []upgrade.Instance
	for i := range 25 {
		ins = append(ins, inst(fmt.Sprintf("x%02d", i), []string{"cassandra", "influxdb", "Cassandra"}[i%3], ""))
	}
	p := planFor(now, false, ins...)
	ws := Waves(p, Options{}, now)
	if len(ws) != 1 || !reflect.DeepEqual(ws[0].Batches, p.Batches) {
		t.Errorf("got %+v, want one wave of the plan's batches %+v", ws, p.Batches)
	}
}

func TestOptionsValidate(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 1, MaxCanary} {
		if err := (Options{Canary: n}).Validate(); err != nil {
			t.Errorf("canary %d: got error %v, want nil", n, err)
		}
	}
	for _, n := range []int{-1, MaxCanary + 1} {
		if err := (Options{Canary: n}).Validate(); err == nil {
			t.Errorf("canary %d: got nil error, want one", n)
		}
	}
}

// TestRolloutOfOldRequests: a request written before rollouts existed is
// one wave of its plan's batches, started and ended as its state says.
func TestRolloutOfOldRequests(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 1, 0, 0, 0, time.UTC)
	p := planFor(now, false, inst("a", "cassandra", ""), inst("b", "influxdb", ""))
	raw, _ := json.Marshal(p)
	confirmed := now.Add(time.Minute)
	history := []store.Event{{At: confirmed, From: store.Planned, To: store.Submitting, User: "U1"}}
	tests := []struct {
		state          store.State
		started, ended bool
	}{
		{store.Planned, false, false},
		{store.Expired, false, false},
		{store.Submitting, true, false},
		{store.Submitted, true, true},
		{store.Done, true, true},
	}
	for _, tc := range tests {
		t.Run(string(tc.state), func(t *testing.T) {
			r := store.Request{ID: "r-1", State: tc.state, Plan: raw, CreatedAt: now, UpdatedAt: now.Add(time.Hour)}
			if tc.started {
				r.History = history
			}
			ro, err := RolloutOf(r)
			if err != nil {
				t.Fatal(err)
			}
			if len(ro.Waves) != 1 || !reflect.DeepEqual(ro.Waves[0].Batches, p.Batches) || ro.Waves[0].Kind != KindRest {
				t.Fatalf("got %+v, want one rest wave of the plan's batches", ro.Waves)
			}
			w := ro.Waves[0]
			if !w.Started.IsZero() != tc.started || !w.Ended.IsZero() != tc.ended {
				t.Errorf("got started %v, ended %v; want started %v, ended %v", w.Started, w.Ended, tc.started, tc.ended)
			}
			if tc.started && (!w.Started.Equal(confirmed) || w.By != "U1") {
				t.Errorf("got started %v by %q, want %v by U1 (the move to submitting)", w.Started, w.By, confirmed)
			}
		})
	}
	if _, err := RolloutOf(store.Request{ID: "r-2", Rollout: json.RawMessage(`{"waves":7}`)}); err == nil {
		t.Errorf("RolloutOf a bad rollout: got nil error, want one")
	}
}

func TestRecheck(t *testing.T) {
	t.Parallel()
	planned := time.Date(2026, 3, 1, 1, 0, 0, 0, time.UTC)
	p := planFor(planned, false,
		inst("a", "cassandra", "03:00-04:00"), inst("b", "cassandra", "03:00-04:00"),
		inst("c", "cassandra", "03:00-04:00"), inst("d", "influxdb", "03:00-04:00"))
	ws := Waves(p, Options{WaitForWindow: true}, planned)
	if len(ws) != 1 {
		t.Fatalf("got %d waves, want 1", len(ws))
	}
	now := time.Date(2026, 3, 1, 3, 10, 0, 0, time.UTC)
	current := map[string]upgrade.Instance{
		"a": inst("a", "cassandra", "03:00-04:00"),
		"c": inst("c", "cassandra", "03:00-04:00"),
		"d": inst("d", "influxdb", "05:00-06:00"), // moved its window
	}
	current["c"] = func() upgrade.Instance { i := current["c"]; i.Actions = []string{"REBOOT"}; return i }()
	send, refused := Recheck(p, ws[0], current, now)
	if want := []upgrade.Batch{{Engine: "cassandra", InstanceIDs: []string{"a"}}}; !reflect.DeepEqual(send, want) {
		t.Errorf("got batches %+v, want %+v", send, want)
	}
	for id, want := range map[string]string{"b": "no longer exists", "c": "REBOOT", "d": "outside its maintenance window"} {
		if !strings.Contains(refused[id], want) {
			t.Errorf("instance %s: got reason %q, want it to say %q", id, refused[id], want)
		}
	}
	if len(refused) != 3 {
		t.Errorf("got %d refused, want 3: %v", len(refused), refused)
	}
}
