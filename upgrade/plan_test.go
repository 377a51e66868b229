package upgrade_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

func inst(id, name, engine string, mut ...func(*upgrade.Instance)) upgrade.Instance {
	in := upgrade.Instance{
		ID: id, Name: name, Status: "normal", Engine: engine, Version: "3.11", PatchAvailable: true,
		MaintenanceWindow: "02:00-06:00",
		Nodes:             []upgrade.Node{{ID: id + "-n1", Name: name + "_node_1", Status: "normal"}},
	}
	for _, m := range mut {
		m(&in)
	}
	return in
}

var (
	inWindow  = time.Date(2026, 3, 12, 3, 30, 0, 0, time.UTC)
	outWindow = time.Date(2026, 3, 12, 14, 5, 0, 0, time.UTC)
)

func TestNewPlanSkipReasons(t *testing.T) {
	opts := upgrade.PlanOptions{BatchEngines: []string{"cassandra", "influxdb"}, Now: inWindow}
	tests := []struct {
		name       string
		refs       []string
		res        upgrade.Resolution
		opts       upgrade.PlanOptions
		wantReason string // substring of the single skip's reason; "" means a target
		wantInst   bool   // whether the skip carries the instance
	}{
		{name: "missing", refs: []string{"nope"}, res: upgrade.Resolution{Missing: []string{"nope"}}, wantReason: "not found in project"},
		{
			name: "ambiguous", refs: []string{"db"},
			res:        upgrade.Resolution{Ambiguous: map[string][]string{"db": {"id1", "id2"}}},
			wantReason: "name db matches 2 instances: id1, id2; use the ID",
		},
		{
			name: "unsupported engine", refs: []string{"m"},
			res:        found("m", inst("i1", "m", "mongodb")),
			wantReason: "engine mongodb is not supported by the batch patch API (supported: cassandra, influxdb)", wantInst: true,
		},
		{
			name: "no patch", refs: []string{"c"},
			res:        found("c", inst("i1", "c", "cassandra", func(i *upgrade.Instance) { i.PatchAvailable = false; i.Version = "3.11.9" })),
			wantReason: "no patch available (version 3.11.9)", wantInst: true,
		},
		{
			name: "status", refs: []string{"c"},
			res:        found("c", inst("i1", "c", "cassandra", func(i *upgrade.Instance) { i.Status = "abnormal" })),
			wantReason: "instance status is abnormal", wantInst: true,
		},
		{
			name: "node", refs: []string{"c"},
			res: found("c", inst("i1", "c", "cassandra", func(i *upgrade.Instance) {
				i.Nodes = append(i.Nodes, upgrade.Node{ID: "n2", Name: "c_node_2", Status: "abnormal"})
			})),
			wantReason: "node c_node_2 (n2) is abnormal", wantInst: true,
		},
		{
			name: "action", refs: []string{"c"},
			res:        found("c", inst("i1", "c", "cassandra", func(i *upgrade.Instance) { i.Actions = []string{"REBOOT"} })),
			wantReason: "operation in progress: REBOOT", wantInst: true,
		},
		{
			name: "outside window", refs: []string{"c"},
			res:        found("c", inst("i1", "c", "cassandra")),
			opts:       upgrade.PlanOptions{BatchEngines: []string{"cassandra"}, Now: outWindow},
			wantReason: "outside its maintenance window 02:00-06:00 UTC (now 14:05 UTC); add --force to patch anyway", wantInst: true,
		},
		{
			name: "outside window, non-UTC now", refs: []string{"c"},
			res:        found("c", inst("i1", "c", "cassandra")),
			opts:       upgrade.PlanOptions{BatchEngines: []string{"cassandra"}, Now: outWindow.In(time.FixedZone("CET", 3600))},
			wantReason: "(now 14:05 UTC)", wantInst: true,
		},
		{name: "healthy in window", refs: []string{"c"}, res: found("c", inst("i1", "c", "cassandra"))},
		{
			name: "no window is no restriction", refs: []string{"c"},
			res:  found("c", inst("i1", "c", "cassandra", func(i *upgrade.Instance) { i.MaintenanceWindow = "" })),
			opts: upgrade.PlanOptions{BatchEngines: []string{"cassandra"}, Now: outWindow},
		},
		{
			name: "unparseable window is no restriction", refs: []string{"c"},
			res:  found("c", inst("i1", "c", "cassandra", func(i *upgrade.Instance) { i.MaintenanceWindow = "soon" })),
			opts: upgrade.PlanOptions{BatchEngines: []string{"cassandra"}, Now: outWindow},
		},
		{
			name: "default engines", refs: []string{"r"},
			res:        found("r", inst("i1", "r", "redis")),
			opts:       upgrade.PlanOptions{Now: inWindow},
			wantReason: "engine redis is not supported by the batch patch API (supported: cassandra, influxdb)", wantInst: true,
		},
		{
			name: "configured engines", refs: []string{"r"},
			res:  found("r", inst("i1", "r", "redis")),
			opts: upgrade.PlanOptions{BatchEngines: []string{"cassandra", "influxdb", "redis"}, Now: inWindow},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.opts
			if o.Now.IsZero() {
				o = opts
			}
			p := upgrade.NewPlan(tt.refs, tt.res, o)
			if tt.wantReason == "" {
				if len(p.Targets) != 1 || len(p.Skipped) != 0 {
					t.Fatalf("got %d targets, %d skipped (%+v), want 1 target", len(p.Targets), len(p.Skipped), p.Skipped)
				}
				if !p.Patchable() {
					t.Errorf("got Patchable false, want true")
				}
				if p.Targets[0].Warning != "" {
					t.Errorf("got warning %q, want none", p.Targets[0].Warning)
				}
				return
			}
			if len(p.Skipped) != 1 || len(p.Targets) != 0 {
				t.Fatalf("got %d targets, %d skipped, want 0 targets, 1 skipped", len(p.Targets), len(p.Skipped))
			}
			sk := p.Skipped[0]
			if !strings.Contains(sk.Reason, tt.wantReason) {
				t.Errorf("got reason %q, want it to contain %q", sk.Reason, tt.wantReason)
			}
			if sk.Ref != tt.refs[0] {
				t.Errorf("got ref %q, want %q", sk.Ref, tt.refs[0])
			}
			if got := sk.Instance != nil; got != tt.wantInst {
				t.Errorf("got instance present %v, want %v", got, tt.wantInst)
			}
			if p.Patchable() {
				t.Errorf("got Patchable true, want false")
			}
			if len(p.Batches) != 0 {
				t.Errorf("got %d batches, want 0", len(p.Batches))
			}
		})
	}
}

func found(ref string, in upgrade.Instance) upgrade.Resolution {
	return upgrade.Resolution{Found: map[string]upgrade.Instance{ref: in}}
}

func TestNewPlanForce(t *testing.T) {
	res := found("c", inst("i1", "c", "cassandra"))
	tests := []struct {
		name        string
		force       bool
		now         time.Time
		wantTargets int
		wantWarning string
	}{
		{name: "outside without force", force: false, now: outWindow, wantTargets: 0},
		{name: "outside with force", force: true, now: outWindow, wantTargets: 1, wantWarning: "outside its maintenance window 02:00-06:00 UTC"},
		{name: "inside with force", force: true, now: inWindow, wantTargets: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := upgrade.NewPlan([]string{"c"}, res, upgrade.PlanOptions{Force: tt.force, Now: tt.now})
			if len(p.Targets) != tt.wantTargets {
				t.Fatalf("got %d targets, want %d", len(p.Targets), tt.wantTargets)
			}
			if p.Force != tt.force {
				t.Errorf("got Force %v, want %v", p.Force, tt.force)
			}
			if !p.CheckedAt.Equal(tt.now) {
				t.Errorf("got CheckedAt %v, want %v", p.CheckedAt, tt.now)
			}
			if tt.wantTargets == 1 && p.Targets[0].Warning != tt.wantWarning {
				t.Errorf("got warning %q, want %q", p.Targets[0].Warning, tt.wantWarning)
			}
			if tt.wantTargets == 0 && (len(p.Skipped) != 1 || !p.Skipped[0].OutsideWindow) {
				t.Errorf("got skipped %+v, want one skip marked OutsideWindow (--force would include it)", p.Skipped)
			}
		})
	}
}

func TestNewPlanSameInstanceTwice(t *testing.T) {
	in := inst("0123456789abcdef0123456789abcdefin06", "db-1", "cassandra")
	res := upgrade.Resolution{Found: map[string]upgrade.Instance{in.ID: in, "db-1": in}}
	p := upgrade.NewPlan([]string{in.ID, "db-1"}, res, upgrade.PlanOptions{Now: inWindow})
	if len(p.Targets) != 1 {
		t.Fatalf("got %d targets, want 1", len(p.Targets))
	}
	if len(p.Skipped) != 0 {
		t.Errorf("got %d skipped, want 0", len(p.Skipped))
	}
	if len(p.Batches) != 1 || len(p.Batches[0].InstanceIDs) != 1 {
		t.Errorf("got batches %+v, want one batch of one ID", p.Batches)
	}
}

func TestNewPlanBatches(t *testing.T) {
	var refs []string
	res := upgrade.Resolution{Found: map[string]upgrade.Instance{}}
	// 23 instances, engines interleaved, influxdb first.
	for i := range 23 {
		engine := "cassandra"
		if i%3 == 0 {
			engine = "influxdb"
		}
		ref := fmt.Sprintf("db-%02d", i)
		refs = append(refs, ref)
		res.Found[ref] = inst(fmt.Sprintf("id-%02d", i), ref, engine)
	}
	// A reference to an already listed instance must not add it twice.
	refs = append(refs, "id-05")
	res.Found["id-05"] = res.Found["db-05"]

	p := upgrade.NewPlan(refs, res, upgrade.PlanOptions{Now: inWindow})
	if len(p.Targets) != 23 {
		t.Fatalf("got %d targets, want 23", len(p.Targets))
	}
	seen := map[string]int{}
	var engines []string
	for _, b := range p.Batches {
		if len(b.InstanceIDs) == 0 || len(b.InstanceIDs) > upgrade.MaxBatch {
			t.Errorf("got batch of %d IDs, want 1..%d", len(b.InstanceIDs), upgrade.MaxBatch)
		}
		for _, id := range b.InstanceIDs {
			seen[id]++
			var in upgrade.Instance
			for _, tg := range p.Targets {
				if tg.Instance.ID == id {
					in = tg.Instance
				}
			}
			if in.Engine != b.Engine {
				t.Errorf("got %s (engine %s) in a %s batch, want single-engine batches", id, in.Engine, b.Engine)
			}
		}
		if len(engines) == 0 || engines[len(engines)-1] != b.Engine {
			engines = append(engines, b.Engine)
		}
	}
	if len(seen) != 23 {
		t.Errorf("got %d distinct IDs in batches, want 23", len(seen))
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("got %s %d times in batches, want once", id, n)
		}
	}
	if want := []string{"influxdb", "cassandra"}; strings.Join(engines, ",") != strings.Join(want, ",") {
		t.Errorf("got engine order %v, want %v", engines, want)
	}
	// 8 influxdb → 1 batch; 15 cassandra → 10 + 5.
	if len(p.Batches) != 3 {
		t.Errorf("got %d batches, want 3", len(p.Batches))
	}
}

func TestInWindow(t *testing.T) {
	cet := time.FixedZone("CET", 3600)
	tokyo := time.FixedZone("JST", 9*3600)
	ny := time.FixedZone("EST", -5*3600)
	day := func(h, m int, loc *time.Location) time.Time { return time.Date(2026, 3, 12, h, m, 0, 0, loc) }
	tests := []struct {
		window string
		t      time.Time
		want   bool
	}{
		{"02:00-06:00", day(2, 0, time.UTC), true},
		{"02:00-06:00", day(5, 59, time.UTC), true},
		{"02:00-06:00", day(6, 0, time.UTC), false},
		{"02:00-06:00", day(1, 59, time.UTC), false},
		{"02:00-06:00", day(4, 0, cet), true},       // 03:00 UTC
		{"02:00-06:00", day(7, 30, cet), false},     // 06:30 UTC
		{"02:00-06:00", day(11, 0, tokyo), true},    // 02:00 UTC
		{"02:00-06:00", day(22, 0, ny), true},       // 03:00 UTC the next day
		{"22:00-02:00", day(23, 0, time.UTC), true}, // crosses midnight
		{"22:00-02:00", day(0, 30, time.UTC), true},
		{"22:00-02:00", day(1, 59, time.UTC), true},
		{"22:00-02:00", day(2, 0, time.UTC), false},
		{"22:00-02:00", day(12, 0, time.UTC), false},
		{"22:00-02:00", day(0, 30, cet), true}, // 23:30 UTC
		{"22:00-02:00", day(3, 30, cet), false},
		{"20:00-24:00", day(23, 59, time.UTC), true},
		{" 02:00-06:00 ", day(3, 0, time.UTC), true},
	}
	for _, tt := range tests {
		t.Run(tt.window+"@"+tt.t.Format(time.RFC3339), func(t *testing.T) {
			got, err := upgrade.InWindow(tt.window, tt.t)
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestInWindowMalformed(t *testing.T) {
	for _, w := range []string{"", "02:00", "2-6", "02:00-06", "25:00-02:00", "02:60-03:00", "aa:bb-cc:dd", "02:00-02:00", "24:00-02:00", "-1:00-02:00", "02:00-06:00-07:00", "+2:00-06:00"} {
		t.Run(w, func(t *testing.T) {
			got, err := upgrade.InWindow(w, inWindow)
			if err == nil {
				t.Errorf("got %v, nil error, want an error", got)
			}
		})
	}
}

func TestDrift(t *testing.T) {
	a := inst("a", "db-a", "cassandra")
	b := inst("b", "db-b", "cassandra")
	p := upgrade.NewPlan([]string{"a", "b"}, upgrade.Resolution{Found: map[string]upgrade.Instance{"a": a, "b": b}}, upgrade.PlanOptions{Now: inWindow})
	tests := []struct {
		name    string
		current map[string]upgrade.Instance
		want    []string // substrings, one per drift sentence
	}{
		{name: "no drift", current: map[string]upgrade.Instance{"a": a, "b": b}},
		{name: "gone", current: map[string]upgrade.Instance{"a": a}, want: []string{"db-b (b) no longer exists"}},
		{name: "status", current: map[string]upgrade.Instance{"a": a, "b": inst("b", "db-b", "cassandra", func(i *upgrade.Instance) { i.Status = "frozen" })}, want: []string{"status changed from normal to frozen"}},
		{name: "patched meanwhile", current: map[string]upgrade.Instance{"a": inst("a", "db-a", "cassandra", func(i *upgrade.Instance) { i.Version = "3.12"; i.PatchAvailable = false }), "b": b}, want: []string{"version changed from 3.11 to 3.12; patch available changed from yes to no"}},
		{name: "action", current: map[string]upgrade.Instance{"a": inst("a", "db-a", "cassandra", func(i *upgrade.Instance) { i.Actions = []string{"REBOOT"} }), "b": b}, want: []string{"operations in progress changed from none to REBOOT"}},
		{name: "node", current: map[string]upgrade.Instance{"a": inst("a", "db-a", "cassandra", func(i *upgrade.Instance) { i.Nodes[0].Status = "abnormal" }), "b": b}, want: []string{"node db-a_node_1 (a-n1) status changed from normal to abnormal"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := p.Drift(tt.current)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d sentences %q, want %d", len(got), got, len(tt.want))
			}
			for i := range got {
				if !strings.Contains(got[i], tt.want[i]) {
					t.Errorf("got %q, want it to contain %q", got[i], tt.want[i])
				}
			}
		})
	}
}

func TestDriftAt(t *testing.T) {
	at := func(h, m int) time.Time { return time.Date(2026, 3, 12, h, m, 0, 0, time.UTC) }
	day := inst("d", "db-day", "cassandra")                                                                        // 02:00-06:00
	night := inst("n", "db-night", "cassandra", func(i *upgrade.Instance) { i.MaintenanceWindow = "22:00-02:00" }) // across midnight
	noWindow := inst("x", "db-x", "cassandra", func(i *upgrade.Instance) { i.MaintenanceWindow = "" })
	odd := inst("o", "db-o", "cassandra", func(i *upgrade.Instance) { i.MaintenanceWindow = "whenever" })
	early := inst("e", "db-early", "cassandra", func(i *upgrade.Instance) { i.MaintenanceWindow = "01:00-05:00" })
	plan := func(t *testing.T, force bool, now time.Time, ins ...upgrade.Instance) (upgrade.Plan, map[string]upgrade.Instance) {
		res := upgrade.Resolution{Found: map[string]upgrade.Instance{}}
		cur := map[string]upgrade.Instance{}
		var refs []string
		for _, in := range ins {
			refs = append(refs, in.ID)
			res.Found[in.ID] = in
			cur[in.ID] = in
		}
		p := upgrade.NewPlan(refs, res, upgrade.PlanOptions{Force: force, Now: now})
		if len(p.Targets) != len(ins) {
			t.Fatalf("plan has %d targets, want %d: %+v", len(p.Targets), len(ins), p.Skipped)
		}
		return p, cur
	}
	tests := []struct {
		name    string
		force   bool
		planned time.Time
		now     time.Time
		ins     []upgrade.Instance
		mutate  func(cur map[string]upgrade.Instance)
		want    []string // substrings, one per sentence
	}{
		{name: "inside the window", planned: at(3, 0), now: at(5, 59), ins: []upgrade.Instance{day}},
		{name: "window passed", planned: at(5, 50), now: at(7, 12), ins: []upgrade.Instance{day},
			want: []string{"Instance db-day (d) is now outside its maintenance window 02:00-06:00 UTC (now 07:12 UTC); run the command again with --force to patch it anyway."}},
		{name: "end is exclusive", planned: at(5, 50), now: at(6, 0), ins: []upgrade.Instance{day},
			want: []string{"db-day (d) is now outside its maintenance window 02:00-06:00 UTC (now 06:00 UTC)"}},
		{name: "forced plan ignores the window", force: true, planned: at(14, 0), now: at(15, 0), ins: []upgrade.Instance{day, night}},
		{name: "across midnight, still inside", planned: at(23, 30), now: at(1, 45).Add(24 * time.Hour), ins: []upgrade.Instance{night}},
		{name: "across midnight, passed", planned: at(23, 30), now: at(2, 5).Add(24 * time.Hour), ins: []upgrade.Instance{night},
			want: []string{"db-night (n) is now outside its maintenance window 22:00-02:00 UTC (now 02:05 UTC)"}},
		{name: "no or malformed window", planned: at(3, 0), now: at(12, 0), ins: []upgrade.Instance{noWindow, odd}},
		{name: "only the target that left its window", planned: at(1, 30), now: at(2, 30), ins: []upgrade.Instance{early, night},
			want: []string{"db-night (n) is now outside its maintenance window 22:00-02:00"}},
		{name: "drift comes first", planned: at(3, 0), now: at(9, 0), ins: []upgrade.Instance{day},
			mutate: func(cur map[string]upgrade.Instance) {
				in := cur["d"]
				in.Status = "frozen"
				cur["d"] = in
			},
			want: []string{"status changed from normal to frozen", "db-day (d) is now outside its maintenance window"}},
		{name: "gone is reported once", planned: at(3, 0), now: at(9, 0), ins: []upgrade.Instance{day},
			mutate: func(cur map[string]upgrade.Instance) { delete(cur, "d") },
			want:   []string{"db-day (d) no longer exists"}},
		{name: "current window counts", planned: at(3, 0), now: at(9, 0), ins: []upgrade.Instance{day},
			mutate: func(cur map[string]upgrade.Instance) {
				in := cur["d"]
				in.MaintenanceWindow = "08:00-12:00"
				cur["d"] = in
			},
			// A changed window is drift of its own, but now is inside the new one.
			want: []string{"maintenance window changed from 02:00-06:00 to 08:00-12:00"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, cur := plan(t, tt.force, tt.planned, tt.ins...)
			if tt.mutate != nil {
				tt.mutate(cur)
			}
			got := p.DriftAt(cur, tt.now)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d sentences %q, want %d", len(got), got, len(tt.want))
			}
			for i := range got {
				if !strings.Contains(got[i], tt.want[i]) {
					t.Errorf("got %q, want it to contain %q", got[i], tt.want[i])
				}
			}
			if drift := p.Drift(cur); len(drift) > len(got) || !slices.Equal(drift, got[:len(drift)]) {
				t.Errorf("got %q, want it to start with Drift's %q", got, drift)
			}
		})
	}
}

// TestDriftEveryField changes each field the plan showed, one at a time,
// and wants one sentence saying what changed from what to what.
func TestDriftEveryField(t *testing.T) {
	base := func(mut ...func(*upgrade.Instance)) upgrade.Instance {
		in := inst("a", "db-a", "cassandra", func(i *upgrade.Instance) {
			i.WholeVersion = "3.11.3.2"
			i.Nodes = append(i.Nodes, upgrade.Node{ID: "a-n2", Name: "db-a_node_2", Status: "normal"})
		})
		for _, m := range mut {
			m(&in)
		}
		return in
	}
	p := upgrade.NewPlan([]string{"a"}, found("a", base()), upgrade.PlanOptions{Now: inWindow})
	if len(p.Targets) != 1 {
		t.Fatalf("plan has %d targets, want 1: %+v", len(p.Targets), p.Skipped)
	}
	const prefix = "Instance db-a (a) changed since the plan was made: "
	tests := []struct {
		name string
		now  upgrade.Instance
		want string // the sentence after prefix; "" means no drift
	}{
		{name: "unchanged", now: base()},
		{name: "patched by hand, a newer patch still offered", now: base(func(i *upgrade.Instance) { i.WholeVersion = "3.11.3.5" }),
			want: "whole version changed from 3.11.3.2 to 3.11.3.5."},
		{name: "name", now: base(func(i *upgrade.Instance) { i.Name = "db-a-old" }), want: "name changed from db-a to db-a-old."},
		{name: "engine", now: base(func(i *upgrade.Instance) { i.Engine = "influxdb" }), want: "engine changed from cassandra to influxdb."},
		{name: "status", now: base(func(i *upgrade.Instance) { i.Status = "abnormal" }), want: "status changed from normal to abnormal."},
		{name: "version", now: base(func(i *upgrade.Instance) { i.Version = "3.12" }), want: "version changed from 3.11 to 3.12."},
		{name: "patch availability", now: base(func(i *upgrade.Instance) { i.PatchAvailable = false }), want: "patch available changed from yes to no."},
		{name: "window", now: base(func(i *upgrade.Instance) { i.MaintenanceWindow = "" }), want: "maintenance window changed from 02:00-06:00 to none."},
		{name: "actions", now: base(func(i *upgrade.Instance) { i.Actions = []string{"UPGRADE_DB_VERSION", "REBOOT"} }),
			want: "operations in progress changed from none to UPGRADE_DB_VERSION, REBOOT."},
		{name: "node status", now: base(func(i *upgrade.Instance) { i.Nodes[1].Status = "upgrading" }),
			want: "node db-a_node_2 (a-n2) status changed from normal to upgrading."},
		{name: "node removed", now: base(func(i *upgrade.Instance) { i.Nodes = i.Nodes[:1] }),
			want: "node db-a_node_2 (a-n2) was removed (it was normal)."},
		{name: "node added", now: base(func(i *upgrade.Instance) {
			i.Nodes = append(i.Nodes, upgrade.Node{ID: "a-n3", Name: "db-a_node_3", Status: "creating"})
		}), want: "node db-a_node_3 (a-n3) was added (it is creating)."},
		{name: "nodes listed in another order", now: base(func(i *upgrade.Instance) { i.Nodes[0], i.Nodes[1] = i.Nodes[1], i.Nodes[0] })},
		{name: "no actions, listed as empty", now: base(func(i *upgrade.Instance) { i.Actions = []string{} })},
		{name: "fields the plan did not show", now: base(func(i *upgrade.Instance) { i.TimeZone = "UTC+08:00"; i.Mode = "Cluster" })},
		{name: "several at once", now: base(func(i *upgrade.Instance) {
			i.Status = "abnormal"
			i.Version = "3.12"
			i.WholeVersion = "3.12.0.1"
			i.PatchAvailable = false
		}), want: "status changed from normal to abnormal; version changed from 3.11 to 3.12; whole version changed from 3.11.3.2 to 3.12.0.1; patch available changed from yes to no."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cur := map[string]upgrade.Instance{"a": tt.now}
			got := p.Drift(cur)
			var want []string
			if tt.want != "" {
				want = []string{prefix + tt.want}
			}
			if !slices.Equal(got, want) {
				t.Errorf("got %q, want %q", got, want)
			}
			// DriftAt (inside the window) reports exactly the same.
			if at := p.DriftAt(cur, inWindow); !slices.Equal(at, want) {
				t.Errorf("DriftAt: got %q, want %q", at, want)
			}
		})
	}
}
