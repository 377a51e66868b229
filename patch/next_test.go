package patch

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

func TestNext(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 1, 0, 0, 0, time.UTC)
	ago := now.Add(-time.Hour)
	wave := func(kind Kind, window string, started, ended bool, ids ...string) Wave {
		w := Wave{Kind: kind, Batches: []upgrade.Batch{{Engine: "cassandra", InstanceIDs: ids}}, Opens: ago}
		w.Window, _ = ParseWindow(window)
		if started {
			w.Started = ago
		}
		if ended {
			w.Ended = ago
		}
		return w
	}
	req := func(state store.State, ro Rollout, edit ...func(*store.Request)) store.Request {
		raw, _ := json.Marshal(ro)
		r := store.Request{ID: "r-1", State: state, Rollout: raw, CreatedAt: ago, UpdatedAt: ago}
		for _, e := range edit {
			e(&r)
		}
		return r
	}
	job := func(instance, status string) store.Job {
		j := store.Job{ID: "job-" + instance, InstanceID: instance, Status: status}
		if status == upgrade.JobCompleted || status == upgrade.JobFailed {
			j.Reported = true
		}
		return j
	}
	canaryOK := wave(KindCanary, "", true, true, "a")
	rest := wave(KindRest, "", false, false, "b", "c")
	later := wave(KindWindow, "03:00-04:00", false, false, "d")
	mark := &Mark{At: ago, By: "U1"}
	legacyPlan, _ := json.Marshal(upgrade.Plan{Batches: []upgrade.Batch{{Engine: "cassandra", InstanceIDs: []string{"a"}}}})

	tests := []struct {
		name  string
		r     store.Request
		jobs  []store.Job
		want  Action
		wave  int
		until time.Time
		why   string
	}{
		{name: "planned", r: req(store.Planned, Rollout{Waves: []Wave{rest}}, func(r *store.Request) { r.ExpiresAt = now.Add(time.Minute) }),
			want: ActionWait, until: now.Add(time.Minute)},
		{name: "planned past its time", r: req(store.AwaitingApproval, Rollout{Waves: []Wave{rest}}, func(r *store.Request) { r.ExpiresAt = now }),
			want: ActionExpire},
		{name: "sending", r: req(store.Submitting, Rollout{Waves: []Wave{canaryOK}}, func(r *store.Request) { r.LeaseUntil = now.Add(time.Second) }),
			want: ActionWait, until: now.Add(time.Second)},
		{name: "sender's claim ran out", r: req(store.Submitting, Rollout{Waves: []Wave{canaryOK}}, func(r *store.Request) { r.LeaseUntil = now }),
			want: ActionRecover},
		{name: "answers not posted", r: req(store.Submitted, Rollout{Waves: []Wave{canaryOK, rest}}, func(r *store.Request) { r.ResultsPending = true }),
			jobs: []store.Job{job("a", upgrade.JobCompleted)}, want: ActionWait, why: "not all posted"},
		{name: "canary running", r: req(store.Submitted, Rollout{Waves: []Wave{canaryOK, rest}}),
			jobs: []store.Job{job("a", upgrade.JobRunning)}, want: ActionWait, why: "canary"},
		{name: "canary not yet polled", r: req(store.Submitted, Rollout{Waves: []Wave{canaryOK, rest}}),
			jobs: []store.Job{job("a", "")}, want: ActionWait, why: "canary"},
		{name: "canary completed", r: req(store.Submitted, Rollout{Waves: []Wave{canaryOK, rest}}),
			jobs: []store.Job{job("a", upgrade.JobCompleted)}, want: ActionSend, wave: 1},
		{name: "canary completed, window closed", r: req(store.Submitted, Rollout{Waves: []Wave{canaryOK, later}}),
			jobs: []store.Job{job("a", upgrade.JobCompleted)}, want: ActionWait, until: now.Add(2 * time.Hour), why: "03:00-04:00"},
		{name: "canary failed", r: req(store.Submitted, Rollout{Waves: []Wave{canaryOK, rest}}),
			jobs: []store.Job{job("a", upgrade.JobFailed)}, want: ActionPause, why: "a failed"},
		{name: "canary with no job", r: req(store.Submitted, Rollout{Waves: []Wave{canaryOK, rest}}),
			want: ActionPause, why: "a started no job"},
		{name: "canary given up", r: req(store.Submitted, Rollout{Waves: []Wave{canaryOK, rest}}),
			jobs: []store.Job{{ID: "job-a", InstanceID: "a", Status: upgrade.JobRunning, GaveUp: true}}, want: ActionPause, why: "no longer followed"},
		{name: "canary failed, continued", r: req(store.Submitted, Rollout{Waves: []Wave{canaryOK, rest}, Continued: mark}),
			jobs: []store.Job{job("a", upgrade.JobFailed)}, want: ActionSend, wave: 1},
		{name: "second canary wave goes in its window while the first runs",
			r:    req(store.Submitted, Rollout{Waves: []Wave{canaryOK, wave(KindCanary, "00:30-02:00", false, false, "e"), rest}}),
			jobs: []store.Job{job("a", upgrade.JobRunning)}, want: ActionSend, wave: 1},
		{name: "no canary, a window later", r: req(store.Submitted, Rollout{Waves: []Wave{wave(KindRest, "", true, true, "a"), later}}),
			jobs: []store.Job{job("a", upgrade.JobRunning)}, want: ActionWait, until: now.Add(2 * time.Hour)},
		{name: "all sent, jobs running", r: req(store.Submitted, Rollout{Waves: []Wave{canaryOK}}),
			jobs: []store.Job{job("a", upgrade.JobRunning)}, want: ActionWait, why: "jobs are running"},
		{name: "all sent, jobs ended", r: req(store.Submitted, Rollout{Waves: []Wave{canaryOK}}),
			jobs: []store.Job{job("a", upgrade.JobFailed)}, want: ActionFinish},
		{name: "paused", r: req(store.Paused, Rollout{Waves: []Wave{canaryOK, rest}, Paused: &Mark{At: ago, Why: "canary a failed"}}),
			want: ActionWait, why: "canary a failed"},
		{name: "stopped, jobs running", r: req(store.Stopped, Rollout{Waves: []Wave{canaryOK, rest}, Stopped: mark}),
			jobs: []store.Job{job("a", upgrade.JobRunning)}, want: ActionWait},
		{name: "stopped, jobs ended", r: req(store.Stopped, Rollout{Waves: []Wave{canaryOK, rest}, Stopped: mark}),
			jobs: []store.Job{job("a", upgrade.JobCompleted)}, want: ActionFinish},
		{name: "stopped and finished", r: req(store.Stopped, Rollout{Waves: []Wave{canaryOK, rest}, Stopped: mark, Finished: mark}),
			want: ActionNone},
		{name: "done", r: req(store.Done, Rollout{Waves: []Wave{canaryOK}}), want: ActionNone},
		{name: "cancelled", r: req(store.Cancelled, Rollout{Waves: []Wave{rest}}), want: ActionNone},
		{name: "old request submitted, jobs ended", r: store.Request{ID: "r-1", State: store.Submitted, Plan: legacyPlan, UpdatedAt: ago},
			jobs: []store.Job{job("a", upgrade.JobCompleted)}, want: ActionFinish},
		{name: "old request left submitting without a lease", r: store.Request{ID: "r-1", State: store.Submitting, Plan: legacyPlan, UpdatedAt: ago},
			want: ActionRecover},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Next(tc.r, tc.jobs, now)
			if err != nil {
				t.Fatalf("Next: got error %v, want nil", err)
			}
			if got.Action != tc.want || (tc.want == ActionSend && got.Wave != tc.wave) || !got.Until.Equal(tc.until) || !strings.Contains(got.Why, tc.why) {
				t.Errorf("got %+v, want action %s (wave %d), until %v, why containing %q", got, tc.want, tc.wave, tc.until, tc.why)
			}
		})
	}
	if _, err := Next(store.Request{ID: "r-1", Rollout: json.RawMessage(`[]`)}, nil, now); err == nil {
		t.Errorf("Next of a bad rollout: got nil error, want one")
	}
}
