package patch

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// fleetOf returns n patchable instances i-01…, every third an InfluxDB.
func fleetOf(n int) []upgrade.Instance {
	var ins []upgrade.Instance
	for i := range n {
		engine := "cassandra"
		if i%3 == 2 {
			engine = "influxdb"
		}
		ins = append(ins, inst(fmt.Sprintf("i-%02d", i+1), engine, ""))
	}
	return ins
}

// Waves of --wave-size after the canary: in plan order, at most WaveSize
// each, each batched by engine in chunks of at most upgrade.MaxBatch.
func TestWavesOfWaveSize(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)
	ins := fleetOf(25)
	waves := Waves(planFor(now, false, ins...), Options{Canary: 1, WaveSize: 5}, now)
	var sizes []int
	var all []string
	for k, w := range waves {
		sizes = append(sizes, len(w.InstanceIDs()))
		all = append(all, w.InstanceIDs()...)
		wantKind := KindRest
		if k == 0 {
			wantKind = KindCanary
		}
		if w.Kind != wantKind {
			t.Errorf("wave %d: kind %s, want %s", k, w.Kind, wantKind)
		}
	}
	if want := []int{1, 5, 5, 5, 5, 4}; !reflect.DeepEqual(sizes, want) {
		t.Errorf("wave sizes %v, want %v", sizes, want)
	}
	var want []string
	for _, in := range ins {
		want = append(want, in.ID)
	}
	slices.Sort(all)
	if !reflect.DeepEqual(all, want) {
		t.Errorf("instances of the waves %v, want each of the plan's once %v", all, want)
	}
	if got := waves[1].InstanceIDs(); !reflect.DeepEqual(slices.Sorted(slices.Values(got)), want[1:6]) {
		t.Errorf("wave 2 holds %v, want the plan's next 5 %v", got, want[1:6])
	}

	// A wave larger than a batch is several batch calls of one engine.
	big := Waves(planFor(now, false, ins...), Options{WaveSize: 25}, now)
	if len(big) != 1 {
		t.Fatalf("--wave-size 25 of 25: %d waves, want 1", len(big))
	}
	for _, b := range big[0].Batches {
		if len(b.InstanceIDs) > upgrade.MaxBatch {
			t.Errorf("batch of %d instances, want at most %d", len(b.InstanceIDs), upgrade.MaxBatch)
		}
	}
	if got := len(big[0].Batches); got != 3 { // 17 cassandra: 10 + 7; 8 influxdb
		t.Errorf("%d batches, want 3 (%+v)", got, big[0].Batches)
	}

	// With --wait-for-window each window's instances are split on their own.
	win := []upgrade.Instance{inst("w1", "cassandra", "18:00-22:00"), inst("w2", "cassandra", "18:00-22:00"), inst("w3", "cassandra", "18:00-22:00"), inst("n1", "cassandra", "")}
	got := shapes(Waves(planFor(now, false, win...), Options{WaveSize: 2, WaitForWindow: true}, now), now)
	wantShapes := []shape{
		{Kind: KindRest, Opens: "12:00", Batches: []string{"cassandra:n1"}},
		{Kind: KindWindow, Window: "18:00-22:00", Opens: "18:00", Batches: []string{"cassandra:w1,w2"}},
		{Kind: KindWindow, Window: "18:00-22:00", Opens: "18:00", Batches: []string{"cassandra:w3"}},
	}
	if !reflect.DeepEqual(got, wantShapes) {
		t.Errorf("windowed waves of 2:\n got %+v\nwant %+v", got, wantShapes)
	}
}

// Above the fleet guard a canary of 1 and waves of 10 are automatic, unless
// asked otherwise; an error budget alone brings waves.
func TestGuarded(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		opts  Options
		n     int
		guard int
		want  Options
	}{
		{"at the guard", Options{}, 10, 10, Options{}},
		{"above the guard", Options{}, 11, 10, Options{Canary: 1, WaveSize: 10}},
		{"default guard", Options{}, 11, 0, Options{Canary: 1, WaveSize: 10}},
		{"canary given", Options{Canary: 3}, 50, 10, Options{Canary: 3, WaveSize: 10}},
		{"wave size given", Options{WaveSize: 5, MaxErrors: 1}, 25, 10, Options{Canary: 1, WaveSize: 5, MaxErrors: 1}},
		{"budget on a small plan", Options{MaxErrors: 2}, 3, 10, Options{WaveSize: 10, MaxErrors: 2}},
		{"higher guard", Options{}, 25, 30, Options{}},
	}
	for _, tt := range tests {
		if got := tt.opts.Guarded(tt.n, tt.guard); got != tt.want {
			t.Errorf("%s: Guarded(%d, %d) = %+v, want %+v", tt.name, tt.n, tt.guard, got, tt.want)
		}
	}
	for _, bad := range []Options{{WaveSize: -1}, {WaveSize: MaxWaveSize + 1}, {MaxErrors: -1}} {
		if bad.Validate() == nil {
			t.Errorf("Validate(%+v): got nil, want an error", bad)
		}
	}
}

// advanceTo lets the poll claims run out, then polls and ticks.
func advanceTo(rn *Runner) {
	time.Sleep(31 * time.Second)
	rn.Poll(context.Background(), "default")
	settle(rn)
	rn.Tick(context.Background())
	settle(rn)
}

// A rollout in waves: the canary, then each wave only once every job of
// the one before it ended; failures within --max-errors are reported and
// the rollout goes on; one more pauses it and nothing is sent until
// Continue, which accepts the errors so far.
func TestRunnerWavesAndBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ins := fleetOf(16)
		rn, st, cloud, rep := newRunner(t, nil, ins...)
		ctx := context.Background()
		create(t, rn.Lifecycle(), "r-1", Options{Canary: 1, WaveSize: 5, MaxErrors: 1}, ins...)
		if _, err := rn.Confirm(ctx, "r-1", "U1", ""); err != nil {
			t.Fatal(err)
		}
		settle(rn)
		sent := func() []string {
			var ids []string
			for _, c := range cloud.calls() {
				ids = append(ids, c...)
			}
			return ids
		}
		if got := sent(); !reflect.DeepEqual(got, []string{"i-01"}) {
			t.Fatalf("after Confirm sent %v, want the canary i-01", got)
		}
		endAll := func(status string, except ...string) {
			for _, id := range sent() {
				if !slices.Contains(except, id) {
					if r, _ := cloud.Job(ctx, "job-"+id); r.Status == upgrade.JobRunning {
						cloud.set("job-"+id, status)
					}
				}
			}
		}
		endAll(upgrade.JobCompleted)
		advanceTo(rn)
		if got := len(sent()); got != 6 {
			t.Fatalf("after the canary completed: %d sent, want 6 (canary + wave of 5)", got)
		}
		// Wave 2 runs: nothing more goes, however often housekeeping ticks.
		for range 3 {
			advanceTo(rn)
		}
		if got := len(sent()); got != 6 {
			t.Fatalf("with wave 2's jobs running: %d sent, want 6", got)
		}
		// One failure is within --max-errors 1: reported, the rollout goes on,
		// but only once every job of wave 2 ended.
		cloud.set("job-i-02", upgrade.JobFailed)
		advanceTo(rn)
		if got := len(sent()); got != 6 {
			t.Fatalf("with 4 jobs of wave 2 still running: %d sent, want 6", got)
		}
		endAll(upgrade.JobCompleted)
		advanceTo(rn)
		if got := len(sent()); got != 11 {
			t.Fatalf("after wave 2 ended with 1 failure: %d sent, want 11", got)
		}
		b, err := budgetOf(t, st, "r-1")
		if err != nil || b != (Budget{Budgeted: true, Used: 1, Allowed: 1}) {
			t.Errorf("budget after one failure: %+v, %v; want 1 of 1 used", b, err)
		}
		// The second failure pauses it; nothing more is sent.
		cloud.set("job-i-07", upgrade.JobFailed)
		endAll(upgrade.JobCompleted)
		advanceTo(rn)
		r, ro := rollout(t, st, "r-1")
		if r.State != store.Paused || ro.Paused == nil || !slices.Equal(ro.Paused.Instances, []string{"i-02", "i-07"}) || !rep.has("more than --max-errors 1 allows") {
			t.Fatalf("after the second failure: state %s, paused %+v; Reporter told:\n%s", r.State, ro.Paused, rep)
		}
		for range 3 {
			advanceTo(rn)
		}
		if got := len(sent()); got != 11 {
			t.Fatalf("while paused: %d sent, want 11", got)
		}
		if _, err := rn.Continue(ctx, "r-1", "U1"); err != nil {
			t.Fatalf("Continue: got error %v, want nil", err)
		}
		settle(rn)
		if got := len(sent()); got != 16 {
			t.Fatalf("after Continue: %d sent, want 16 (the last wave)", got)
		}
		b, _ = budgetOf(t, st, "r-1")
		if b.Used != 0 || b.Accepted != 2 {
			t.Errorf("budget after Continue: %+v, want 0 used, 2 accepted", b)
		}
		endAll(upgrade.JobCompleted)
		advanceTo(rn)
		advanceTo(rn)
		if r, _ := st.Get(t.Context(), "r-1"); r.State != store.Done {
			t.Errorf("at the end: state %s, want done; Reporter told:\n%s", r.State, rep)
		}
		if got := sent(); len(got) != 16 || len(slices.Compact(slices.Sorted(slices.Values(got)))) != 16 {
			t.Errorf("sent %v, want each of the 16 instances once", got)
		}
	})
}

// budgetOf is BudgetOf of the stored request.
func budgetOf(t *testing.T, st *store.Bolt, id string) (Budget, error) {
	t.Helper()
	r, err := st.Get(t.Context(), id)
	if err != nil {
		return Budget{}, err
	}
	jobs, err := st.Jobs(t.Context(), id)
	if err != nil {
		return Budget{}, err
	}
	return BudgetOf(r, jobs)
}
