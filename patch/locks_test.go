package patch

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// TestInstanceLockExactlyOnce: two requests over the same instances are
// confirmed by 50 racing callers on two replicas: each request's Confirm
// is won once, and each instance is sendable (locked) by exactly one of
// the two winners; the other's Send names the holder (issue 19).
func TestInstanceLockExactlyOnce(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			rs := b.open(t)
			now := rs.clock.Now()
			ins := []upgrade.Instance{inst("i-0", "cassandra", ""), inst("i-1", "cassandra", ""), inst("i-2", "cassandra", "")}
			for _, id := range []string{"r-a", "r-b"} {
				r := store.Request{ID: id, Requester: "U-" + id, Target: "prod", ExpiresAt: now.Add(testTTL)}
				if _, err := rs.ls[0].Create(t.Context(), r, planFor(now, false, ins...), Options{}); err != nil {
					t.Fatalf("Create: %v", err)
				}
			}
			var mu sync.Mutex
			winners := map[string]*Send{}
			race(50, func(i int) {
				id := []string{"r-a", "r-b"}[i%2]
				_, s, err := rs.pick(i/2).Confirm(t.Context(), id, "U-"+id)
				switch {
				case err == nil:
					mu.Lock()
					if winners[id] != nil {
						t.Errorf("Confirm of %s won twice", id)
					}
					winners[id] = s
					mu.Unlock()
				case !errors.Is(err, store.ErrConflict):
					t.Errorf("Confirm: got error %v, want nil or a conflict", err)
				}
			})
			if len(winners) != 2 {
				t.Fatalf("got %d winning requests, want 2", len(winners))
			}
			for _, in := range ins {
				free := 0
				for id, s := range winners {
					h, locked := s.Locked[in.ID]
					if !locked {
						free++
						continue
					}
					if h == id || (h != "r-a" && h != "r-b") {
						t.Errorf("%s: %s is locked by %q, want the other request", id, in.ID, h)
					}
				}
				if free != 1 {
					t.Errorf("%s may be sent by %d requests, want exactly 1", in.ID, free)
				}
			}
			la, _ := rs.st.Locks(t.Context(), "r-a")
			lb, _ := rs.st.Locks(t.Context(), "r-b")
			all := append(la, lb...)
			slices.Sort(all)
			if want := LockKeys("prod", []string{"i-0", "i-1", "i-2"}); !slices.Equal(all, want) {
				t.Errorf("locks held: r-a %v, r-b %v; want %v once in all", la, lb, want)
			}
		})
	}
}

// A second request for an instance whose job runs is answered "being
// patched by r-1 of @U1" and sends nothing; once the job ends and a tick
// settles r-1, its lock is gone and a third request sends the instance.
// Retry refuses a request that is not final.
func TestRunnerInstanceLock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := inst("i-a", "cassandra", "")
		rn, st, cloud, rep := newRunner(t, nil, a)
		ctx := context.Background()
		create(t, rn.Lifecycle(), "r-1", Options{}, a)
		if _, err := rn.Confirm(ctx, "r-1", "U1", ""); err != nil {
			t.Fatalf("Confirm r-1: %v", err)
		}
		settle(rn)
		if _, err := rn.Retry(ctx, "r-1"); !errors.Is(err, ErrNotFinal) {
			t.Errorf("Retry of a running request: got %v, want ErrNotFinal", err)
		}
		create(t, rn.Lifecycle(), "r-2", Options{}, a)
		if _, err := rn.Confirm(ctx, "r-2", "U1", ""); err != nil {
			t.Fatalf("Confirm r-2: %v", err)
		}
		settle(rn)
		if got := cloud.calls(); len(got) != 1 {
			t.Fatalf("batch calls %v, want only r-1's", got)
		}
		r2, _ := st.Get(ctx, "r-2")
		_, res, _ := PlanOf(r2)
		if len(res) != 1 || res[0].ErrorCode != CodeNotSent || !strings.Contains(res[0].ErrorMessage, "being patched by r-1 of @U1") {
			t.Errorf("r-2's answers %+v, want i-a skipped as being patched by r-1 of @U1", res)
		}
		rn.Tick(ctx)
		settle(rn)
		if keys, _ := st.Locks(ctx, "r-1"); len(keys) != 1 {
			t.Errorf("r-1 holds %v while its job runs, want its instance's lock", keys)
		}
		cloud.set("job-i-a", upgrade.JobCompleted)
		rn.Poll(ctx, "default")
		settle(rn)
		time.Sleep(time.Minute)
		rn.Tick(ctx)
		settle(rn)
		if keys, _ := st.Locks(ctx, "r-1"); len(keys) != 0 {
			t.Errorf("r-1 still holds %v after its job ended:\n%s", keys, rep)
		}
		create(t, rn.Lifecycle(), "r-3", Options{}, a)
		if _, err := rn.Confirm(ctx, "r-3", "U1", ""); err != nil {
			t.Fatalf("Confirm r-3: %v", err)
		}
		settle(rn)
		if got := cloud.calls(); len(got) != 2 || !slices.Equal(got[1], []string{"i-a"}) {
			t.Errorf("batch calls %v, want r-3 to send i-a", got)
		}
	})
}

// A canary answered 504 APIG.0201 (the gateway gave up; the job started)
// is unknown, not refused: the rollout pauses, is stopped, and the
// instance keeps its lock until the instance list shows no upgrade in
// progress on two polls in a row.
func TestUnknownOutcomeKeepsLockUntilTwoQuietPolls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := inst("i-a", "cassandra", ""), inst("i-b", "cassandra", "")
		rn, st, cloud, _ := newRunner(t, nil, a, b)
		ctx := context.Background()
		create(t, rn.Lifecycle(), "r-1", Options{Canary: 1}, a, b)
		cloud.fail = &upgrade.APIError{Status: 504, Code: "APIG.0201", Message: "Backend timeout."}
		if _, err := rn.Confirm(ctx, "r-1", "U1", ""); err != nil {
			t.Fatalf("Confirm: %v", err)
		}
		settle(rn)
		r, _ := st.Get(ctx, "r-1")
		if _, res, _ := PlanOf(r); len(res) != 1 || !UnknownOutcome(res[0]) || !strings.Contains(res[0].ErrorMessage, "APIG.0201") {
			t.Fatalf("canary answer %+v, want unknown showing APIG.0201", res)
		}
		rn.Tick(ctx)
		settle(rn)
		if _, err := rn.Stop(ctx, "r-1", "U1"); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		settle(rn)
		upgrading := a
		upgrading.Actions = []string{"UPGRADE_DB_VERSION"}
		cloud.setInstance(upgrading)
		for i := range 3 {
			time.Sleep(time.Minute)
			rn.Tick(ctx)
			settle(rn)
			if keys, _ := st.Locks(ctx, "r-1"); len(keys) != 1 {
				t.Fatalf("tick %d while upgrading: r-1 holds %v, want its lock", i, keys)
			}
		}
		cloud.setInstance(a)
		time.Sleep(time.Minute)
		rn.Tick(ctx)
		settle(rn)
		if keys, _ := st.Locks(ctx, "r-1"); len(keys) != 1 {
			t.Fatalf("after one quiet poll r-1 holds %v, want its lock still", keys)
		}
		time.Sleep(time.Minute)
		rn.Tick(ctx)
		settle(rn)
		if keys, _ := st.Locks(ctx, "r-1"); len(keys) != 0 {
			t.Errorf("after two quiet polls r-1 holds %v, want none", keys)
		}
	})
}

// After a Redis failover lost the record of a batch this request sent,
// the re-check of its wave finds the instance upgrading (or on another
// version): it is reported as "an upgrade is in progress (possibly this
// request's)", unknown, never "not sent … nothing was started", and keeps
// its lock (issue 19).
func TestRecheckFindsAnUpgradeInProgress(t *testing.T) {
	for _, tt := range []struct {
		name   string
		change func(in *upgrade.Instance)
	}{
		{"upgrading", func(in *upgrade.Instance) { in.Actions = []string{"UPGRADE_DB_VERSION"} }},
		{"version moved", func(in *upgrade.Instance) { in.WholeVersion = "4.0.2" }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				a := inst("i-a", "cassandra", "")
				rn, st, cloud, _ := newRunner(t, nil, a)
				ctx := context.Background()
				create(t, rn.Lifecycle(), "r-1", Options{}, a)
				moved := a
				tt.change(&moved)
				cloud.setInstance(moved)
				if _, err := rn.Confirm(ctx, "r-1", "U1", ""); err != nil {
					t.Fatalf("Confirm: %v", err)
				}
				settle(rn)
				if n := len(cloud.calls()); n != 0 {
					t.Fatalf("%d batch calls, want none", n)
				}
				r, _ := st.Get(ctx, "r-1")
				_, res, _ := PlanOf(r)
				if len(res) != 1 || !UnknownOutcome(res[0]) || !strings.Contains(res[0].ErrorMessage, "an upgrade is in progress (possibly this request's)") ||
					strings.Contains(res[0].ErrorMessage, "Nothing was started") {
					t.Errorf("answer %+v, want unknown: an upgrade is in progress (possibly this request's)", res)
				}
				if keys, _ := st.Locks(ctx, "r-1"); len(keys) != 1 {
					t.Errorf("r-1 holds %v, want the instance's lock kept", keys)
				}
			})
		})
	}
}
