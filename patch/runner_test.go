package patch

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// fakeReporter records what the Runner says, one line per call
// ("results r-1 wave 0: 2 answers"), and posts everything.
type fakeReporter struct {
	mu    sync.Mutex
	said  []string
	sends []SendReport
}

func (f *fakeReporter) say(format string, a ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.said = append(f.said, fmt.Sprintf(format, a...))
}

// lines returns what was said so far, and whether any line contains s.
func (f *fakeReporter) has(s string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.ContainsFunc(f.said, func(l string) bool { return strings.Contains(l, s) })
}

func (f *fakeReporter) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.said, "\n")
}

func (f *fakeReporter) Decided(_ context.Context, d Decision) {
	f.say("decided %s %s by %s (%s)", d.Verb, d.Request.ID, d.By, d.Request.State)
}
func (f *fakeReporter) AskApproval(_ context.Context, r store.Request) (string, error) {
	f.say("ask approval %s", r.ID)
	return "ts-approval", nil
}
func (f *fakeReporter) Announce(_ context.Context, r store.Request) (string, error) {
	f.say("announce %s", r.ID)
	return "ts-parent", nil
}
func (f *fakeReporter) Results(_ context.Context, r store.Request, wave int, answers []upgrade.UpgradeResult, _ *Recovery) bool {
	f.say("results %s wave %d: %d answers", r.ID, wave, len(answers))
	return true
}
func (f *fakeReporter) Sent(_ context.Context, s SendReport) {
	f.mu.Lock()
	f.sends = append(f.sends, s)
	f.mu.Unlock()
	f.say("sent %s wave %d: %d jobs, ended %v", s.Request.ID, s.Wave, len(s.JobIDs), s.Ended)
}
func (f *fakeReporter) JobEnds(_ context.Context, r store.Request, jobs []store.Job) int {
	for _, j := range jobs {
		f.say("job end %s %s %s", r.ID, j.InstanceID, j.Status)
	}
	return len(jobs)
}
func (f *fakeReporter) Paused(_ context.Context, r store.Request, step Step) {
	f.say("paused %s: %s", r.ID, step.Why)
}
func (f *fakeReporter) Summary(_ context.Context, r store.Request, s Summary) bool {
	f.say("summary %s: %d jobs", r.ID, len(s.Jobs))
	return true
}
func (f *fakeReporter) Finished(_ context.Context, r store.Request, _ []store.Job) {
	f.say("finished %s (%s)", r.ID, r.State)
}
func (f *fakeReporter) Expired(_ context.Context, r store.Request) { f.say("expired %s", r.ID) }
func (f *fakeReporter) Refresh(_ context.Context, r store.Request) { f.say("refresh %s", r.ID) }

// fakeCloud is a GeminiDB that knows instances, starts a job per batch
// instance (counting batch calls) and answers job reads from status.
type fakeCloud struct {
	mu      sync.Mutex
	ins     map[string]upgrade.Instance
	batches [][]string
	status  map[string]string // job ID → status
	fail    error             // the answer of every batch call, when set (after the call)
}

func (c *fakeCloud) setInstance(in upgrade.Instance) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ins[in.ID] = in
}

func (c *fakeCloud) Resolve(_ context.Context, refs []string) (upgrade.Resolution, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	res := upgrade.Resolution{Found: map[string]upgrade.Instance{}}
	for _, r := range refs {
		if in, ok := c.ins[r]; ok {
			res.Found[r] = in
		}
	}
	return res, nil
}

func (c *fakeCloud) BatchUpgrade(_ context.Context, ids []string) ([]upgrade.UpgradeResult, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batches = append(c.batches, slices.Clone(ids))
	out := make([]upgrade.UpgradeResult, len(ids))
	for i, id := range ids {
		out[i] = upgrade.UpgradeResult{InstanceID: id, JobID: "job-" + id}
		c.status["job-"+id] = upgrade.JobRunning
	}
	if c.fail != nil {
		return nil, c.fail
	}
	return out, nil
}

func (c *fakeCloud) Job(_ context.Context, id string) (upgrade.Job, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	j := upgrade.Job{ID: id, Status: c.status[id]}
	if j.Finished() {
		j.Ended = time.Now()
	}
	return j, nil
}

func (c *fakeCloud) set(job, status string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.status[job] = status
}

func (c *fakeCloud) calls() [][]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.batches)
}

// oneSite is a Fleet of one target.
type oneSite struct{ s Site }

func (f oneSite) Sites() []Site                     { return []Site{f.s} }
func (f oneSite) SiteOf(store.Request) (Site, bool) { return f.s, true }

// newRunner returns a Runner on a fresh bbolt store with the bubble's
// clock, a fake cloud of ins, and a fake Reporter.
func newRunner(t *testing.T, approvers []string, ins ...upgrade.Instance) (*Runner, *store.Bolt, *fakeCloud, *fakeReporter) {
	t.Helper()
	st := openBolt(t, filepath.Join(t.TempDir(), "s.db"), time.Now)
	cloud := &fakeCloud{ins: map[string]upgrade.Instance{}, status: map[string]string{}}
	for _, in := range ins {
		cloud.ins[in.ID] = in
	}
	rep := &fakeReporter{}
	rn := NewRunner(RunnerOptions{Store: st, Fleet: oneSite{Site{Name: "default", Cloud: cloud, Approvers: approvers}},
		Reporter: rep, Log: zerolog.Nop(), PollInterval: 30 * time.Second})
	return rn, st, cloud, rep
}

// settle waits for the sends the Runner started and for the bubble to
// be idle.
func settle(rn *Runner) {
	rn.Wait()
	synctest.Wait()
}

// A Confirm sends the one wave exactly once (a second Confirm loses the
// race); Poll reports the job ends, and Tick posts the summary and
// finishes the request: everything said through the Reporter.
func TestRunnerConfirmToDone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := inst("i-a", "cassandra", ""), inst("i-b", "cassandra", "")
		rn, st, cloud, rep := newRunner(t, nil, a, b)
		ctx := context.Background()
		create(t, rn.Lifecycle(), "r-1", Options{}, a, b)

		if _, err := rn.Confirm(ctx, "r-1", "U1", "reply-1"); err != nil {
			t.Fatalf("Confirm: got error %v, want nil", err)
		}
		if _, err := rn.Confirm(ctx, "r-1", "U1", "reply-1"); !isConflict(err, store.Submitting) && !isConflict(err, store.Submitted) {
			t.Errorf("second Confirm: got error %v, want a lost race", err)
		}
		settle(rn)
		if got := cloud.calls(); len(got) != 1 || len(got[0]) != 2 {
			t.Fatalf("batch calls %v, want one of both instances", got)
		}
		for _, want := range []string{"decided confirm r-1 by U1", "announce r-1", "results r-1 wave 0: 2 answers", "sent r-1 wave 0: 2 jobs, ended true"} {
			if !rep.has(want) {
				t.Errorf("the Reporter was not told %q; it was told:\n%s", want, rep)
			}
		}
		if rep.sends[0].Reply != "reply-1" {
			t.Errorf("Sent's reply %q, want the confirmer's reply-1", rep.sends[0].Reply)
		}

		cloud.set("job-i-a", upgrade.JobCompleted)
		cloud.set("job-i-b", upgrade.JobFailed)
		rn.Poll(ctx, "default")
		settle(rn)
		if !rep.has("job end r-1 i-b Failed") || !rep.has("job end r-1 i-a Completed") {
			t.Errorf("job ends not reported:\n%s", rep)
		}
		// Reported once: a second poll (a minute on) says nothing more.
		time.Sleep(time.Minute)
		before := rep.String()
		rn.Poll(ctx, "default")
		rn.Tick(ctx)
		settle(rn)
		if strings.Count(rep.String(), "job end") != strings.Count(before, "job end") {
			t.Errorf("job ends reported twice:\n%s", rep)
		}
		r, _ := st.Get(t.Context(), "r-1")
		if r.State != store.Done || !rep.has("summary r-1: 2 jobs") || !rep.has("finished r-1 (done)") {
			t.Errorf("after the jobs ended: state %s, Reporter told:\n%s", r.State, rep)
		}
		if r.ResultsPending {
			t.Error("ResultsPending is still set after the answers were posted")
		}
	})
}

// With approvers, Confirm asks them (no batch call); Approve then sends.
func TestRunnerApproval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := inst("i-a", "cassandra", "")
		rn, st, cloud, rep := newRunner(t, []string{"U2"}, a)
		ctx := context.Background()
		create(t, rn.Lifecycle(), "r-1", Options{}, a)
		r, err := rn.Confirm(ctx, "r-1", "U1", "reply-1")
		if err != nil || r.State != store.AwaitingApproval || r.ApprovalTS != "ts-approval" {
			t.Fatalf("Confirm with approvers: got %s (approval ts %q), %v; want awaiting approval with its ts", r.State, r.ApprovalTS, err)
		}
		settle(rn)
		if n := len(cloud.calls()); n != 0 {
			t.Fatalf("%d batch calls before approval, want 0", n)
		}
		if _, err := rn.Approve(ctx, "r-1", "U2"); err != nil {
			t.Fatalf("Approve: got error %v, want nil", err)
		}
		settle(rn)
		if n := len(cloud.calls()); n != 1 {
			t.Errorf("%d batch calls after approval, want 1", n)
		}
		if got, _ := st.Get(t.Context(), "r-1"); got.Approver != "U2" || !rep.has("decided approve r-1 by U2") {
			t.Errorf("approver %q; Reporter told:\n%s", got.Approver, rep)
		}
	})
}

// A failed canary pauses the request (Tick) and says so; Continue sends
// the rest, once; Stop afterwards ends it with nothing more sent.
func TestRunnerCanaryPauseContinue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := inst("i-a", "cassandra", ""), inst("i-b", "cassandra", "")
		rn, st, cloud, rep := newRunner(t, nil, a, b)
		ctx := context.Background()
		create(t, rn.Lifecycle(), "r-1", Options{Canary: 1}, a, b)
		if _, err := rn.Confirm(ctx, "r-1", "U1", ""); err != nil {
			t.Fatal(err)
		}
		settle(rn)
		canary := cloud.calls()[0][0]
		cloud.set("job-"+canary, upgrade.JobFailed)
		rn.Poll(ctx, "default")
		settle(rn)
		if r, _ := st.Get(t.Context(), "r-1"); r.State != store.Paused || !rep.has("paused r-1: canary "+canary+" failed") {
			t.Fatalf("after the canary failed: state %s; Reporter told:\n%s", r.State, rep)
		}
		if n := len(cloud.calls()); n != 1 {
			t.Fatalf("%d batch calls while paused, want 1", n)
		}
		if _, err := rn.Continue(ctx, "r-1", "U1"); err != nil {
			t.Fatalf("Continue: got error %v, want nil", err)
		}
		if _, err := rn.Continue(ctx, "r-1", "U1"); !isConflict(err, store.Submitted) && !isConflict(err, store.Submitting) {
			t.Errorf("second Continue: got error %v, want a lost race", err)
		}
		settle(rn)
		if got := cloud.calls(); len(got) != 2 || got[1][0] == canary {
			t.Fatalf("batch calls after Continue %v, want the rest sent once", got)
		}
		if _, err := rn.Stop(ctx, "r-1", "U1"); err != nil {
			t.Fatalf("Stop: got error %v, want nil", err)
		}
		settle(rn)
		r, ro := rollout(t, st, "r-1")
		if r.State != store.Stopped || ro.Stopped == nil || !rep.has("decided stop r-1 by U1") {
			t.Errorf("after Stop: state %s, rollout %+v; Reporter told:\n%s", r.State, ro, rep)
		}
	})
}

// A plan not decided within its TTL is expired by Tick, and said so.
func TestRunnerTickExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := inst("i-a", "cassandra", "")
		rn, st, _, rep := newRunner(t, nil, a)
		create(t, rn.Lifecycle(), "r-1", Options{}, a)
		rn.Tick(context.Background())
		if r, _ := st.Get(t.Context(), "r-1"); r.State != store.Planned {
			t.Fatalf("before the TTL: state %s, want planned", r.State)
		}
		time.Sleep(testTTL)
		rn.Tick(context.Background())
		if r, _ := st.Get(t.Context(), "r-1"); r.State != store.Expired || !rep.has("expired r-1") {
			t.Errorf("after the TTL: state %s; Reporter told:\n%s", r.State, rep)
		}
	})
}

// Retry names the instances that were not patched, and nothing once
// every one was.
func TestRunnerRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := inst("i-a", "cassandra", ""), inst("i-b", "cassandra", "")
		rn, _, cloud, _ := newRunner(t, nil, a, b)
		ctx := context.Background()
		create(t, rn.Lifecycle(), "r-1", Options{}, a, b)
		if _, err := rn.Confirm(ctx, "r-1", "U1", ""); err != nil {
			t.Fatal(err)
		}
		settle(rn)
		cloud.set("job-i-a", upgrade.JobCompleted)
		cloud.set("job-i-b", upgrade.JobFailed)
		rn.Poll(ctx, "default")
		settle(rn)
		ids, err := rn.Retry(ctx, "r-1")
		if err != nil || strings.Join(ids, ",") != "i-b" {
			t.Errorf("Retry: got %v, %v; want [i-b]", ids, err)
		}
	})
}
