package upgradetest_test

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade/upgradetest"
)

// clock is a settable clock for WithClock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// startJob patches in and returns the job ID the fake answered.
func startJob(t *testing.T, s *upgradetest.Server, in upgrade.Instance) string {
	t.Helper()
	status, m := do(t, s, http.MethodPost, "/instances/db-upgrade", `{"instance_ids":["`+in.ID+`"]}`)
	if status != http.StatusAccepted {
		t.Fatalf("got status %d, want 202", status)
	}
	id, _ := m["upgrade_results"].([]any)[0].(map[string]any)["job_id"].(string)
	if id == "" {
		t.Fatalf("got %v, want a job", m)
	}
	return id
}

func TestJobOutcomeEndsJobsOnTheFakesClock(t *testing.T) {
	start := time.Date(2025, 3, 1, 2, 30, 0, 500_000_000, time.UTC)
	clk := &clock{now: start}
	s := upgradetest.NewServer(t, upgradetest.WithToken("t"), upgradetest.WithClock(clk.Now))
	ok := upgradetest.NewInstance("orders", "cassandra")
	bad := upgradetest.NewInstance("payments", "cassandra")
	manual := upgradetest.NewInstance("manual", "cassandra")
	for _, in := range []upgrade.Instance{ok, bad, manual} {
		s.AddInstance(in)
	}
	s.SetJobOutcome(ok.ID, upgradetest.JobOutcome{Duration: 14 * time.Second, NewVersion: "3.11.3.5"})
	s.SetJobOutcome(bad.ID, upgradetest.JobOutcome{Duration: 20 * time.Second, FailReason: "node restart timed out"})
	okJob, badJob, manualJob := startJob(t, s, ok), startJob(t, s, bad), startJob(t, s, manual)

	clk.Advance(7 * time.Second)
	_, m := get(t, s, "/jobs?id="+okJob)
	if j := m["jobs"].([]any)[0].(map[string]any); j["status"] != "Running" || j["progress"] != "50%" {
		t.Errorf("halfway: got %v, want Running 50%%", j)
	}
	if in, _ := s.Instance(ok.ID); len(in.Actions) == 0 {
		t.Errorf("halfway: got %+v, want the patch in its actions", in)
	}

	clk.Advance(8 * time.Second) // 15s: the first job is over, the second not
	j, _ := s.Job(okJob)
	if j.Status != upgrade.JobCompleted || j.Ended.Sub(j.Started) != 14*time.Second {
		t.Errorf("got %+v, want Completed exactly 14s after its start", j)
	}
	if in, _ := s.Instance(ok.ID); in.WholeVersion != "3.11.3.5" || in.Version != "3.11" || in.PatchAvailable || len(in.Actions) != 0 {
		t.Errorf("got %+v, want version 3.11.3.5, no patch, no action", in)
	}
	if j, _ := s.Job(badJob); j.Status != upgrade.JobRunning {
		t.Errorf("got %+v, want still Running", j)
	}

	clk.Advance(time.Hour)
	_, m = get(t, s, "/jobs?id="+badJob)
	jm := m["jobs"].([]any)[0].(map[string]any)
	if jm["status"] != "Failed" || jm["fail_reason"] != "node restart timed out" || jm["end_time"] != "2025-03-01T02:30:20+0000" {
		t.Errorf("got %v, want Failed with its reason, ended 20s after the start", jm)
	}
	if in, _ := s.Instance(bad.ID); in.WholeVersion != bad.WholeVersion || !in.PatchAvailable {
		t.Errorf("got %+v, want the old version and the patch still available", in)
	}
	if j, _ := s.Job(manualJob); j.Status != upgrade.JobRunning || j.Progress != "0%" {
		t.Errorf("got %+v, want a job without outcome to run until driven", j)
	}

	// The outcome holds for later jobs too, until removed.
	s.SetJobOutcome(bad.ID, upgradetest.JobOutcome{})
	again := startJob(t, s, bad)
	clk.Advance(time.Hour)
	if j, _ := s.Job(again); j.Status != upgrade.JobRunning {
		t.Errorf("got %+v, want Running after the outcome was removed", j)
	}
}

func TestWithJobIDs(t *testing.T) {
	n := 0
	s := upgradetest.NewServer(t, upgradetest.WithToken("t"), upgradetest.WithJobIDs(func() string {
		n++
		return fmt.Sprintf("00000000-0000-4000-8000-%012d", n)
	}))
	in := upgradetest.NewInstance("orders", "cassandra")
	s.AddInstance(in)
	if got := startJob(t, s, in); got != "00000000-0000-4000-8000-000000000001" {
		t.Errorf("got job ID %s, want the first one of the generator", got)
	}
}

func TestStartOutsideATest(t *testing.T) {
	s, err := upgradetest.Start(upgradetest.WithToken("t"))
	if err != nil {
		t.Fatal(err)
	}
	s.SetInstance("nope", func(*upgrade.Instance) {}) // ignored, not a test failure
	if status, _ := get(t, s, "/instances"); status != http.StatusOK {
		t.Errorf("got status %d, want 200", status)
	}
	s.Close()
	s.Close()
	if _, err := http.Get(s.URL + "/v3/x/instances"); err == nil {
		t.Error("the fake still answers after Close")
	}
}
