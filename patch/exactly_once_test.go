package patch

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store/storetest"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// fakeClock is a clock that moves only when told, for tests that cannot
// run in a synctest bubble (a Redis server is outside it).
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// replicas are lifecycles on one store, as bot replicas sharing it.
type replicas struct {
	ls    []*Lifecycle
	st    Store // any replica's store, to set things up and look
	clock *fakeClock
}

// pick returns replica i's lifecycle (round robin).
func (rs replicas) pick(i int) *Lifecycle { return rs.ls[i%len(rs.ls)] }

// backends open, for a test, two replicas on one store of each kind.
var backends = []struct {
	name string
	open func(t *testing.T) replicas
}{
	{"bolt", func(t *testing.T) replicas {
		c := &fakeClock{t: time.Date(2026, 3, 1, 1, 0, 0, 0, time.UTC)}
		st := openBolt(t, filepath.Join(t.TempDir(), "s.db"), c.Now)
		// bbolt: one process holds the file; its goroutines are the
		// replicas.
		return replicas{ls: []*Lifecycle{New(st, c.Now, testLease), New(st, c.Now, testLease)}, st: st, clock: c}
	}},
	{"redis", func(t *testing.T) replicas {
		addr := storetest.StartRedis(t)
		c := &fakeClock{t: time.Date(2026, 3, 1, 1, 0, 0, 0, time.UTC)}
		rs := replicas{clock: c}
		for range 2 {
			st, err := store.OpenRedisWith(context.Background(), "redis://"+addr+"/0", store.RedisOptions{Prefix: "test:", Now: c.Now})
			if err != nil {
				t.Fatalf("OpenRedisWith: got error %v, want nil", err)
			}
			t.Cleanup(func() { _ = st.Close() })
			rs.ls = append(rs.ls, New(st, c.Now, testLease))
			rs.st = st
		}
		return rs
	}},
}

// canaryDone makes request id with a canary of one that Completed and a
// rest of 11 instances (two batches) now due, as wave 1.
func canaryDone(t *testing.T, rs replicas, id string) {
	t.Helper()
	l := rs.ls[0]
	now := rs.clock.Now()
	var ins []upgrade.Instance
	for i := range 12 {
		ins = append(ins, inst(fmt.Sprintf("%s-i%02d", id, i), "cassandra", ""))
	}
	if _, err := l.Create(t.Context(), store.Request{ID: id, Requester: "U1", ExpiresAt: now.Add(testTTL)}, planFor(now, false, ins...), Options{Canary: 1}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	_, s, err := l.Confirm(t.Context(), id, "U1")
	if err != nil {
		t.Fatalf("Confirm: %v", err)
	}
	send(t, l, rs.st, s, func(iid string) upgrade.UpgradeResult {
		return upgrade.UpgradeResult{InstanceID: iid, JobID: "job-" + iid}
	})
	endJob(t, rs.st, "job-"+ins[0].ID, upgrade.JobCompleted)
}

// race runs fn(i) in n goroutines released at once.
func race(n int, fn func(i int)) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			fn(i)
		})
	}
	close(start)
	wg.Wait()
}

// TestSendWaveExactlyOnce: 50 callers (clicks, redeliveries, replicas)
// race for the same wave; one wins, every other is told no, before and
// after the winner sends it.
func TestSendWaveExactlyOnce(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			rs := b.open(t)
			canaryDone(t, rs, "r-1")
			var winners []*Send
			var mu sync.Mutex
			var lost atomic.Int32
			race(50, func(i int) {
				_, s, err := rs.pick(i).SendWave(t.Context(), "r-1", 1, fmt.Sprintf("U%d", i))
				switch {
				case err == nil:
					mu.Lock()
					winners = append(winners, s)
					mu.Unlock()
				case errors.Is(err, store.ErrConflict):
					lost.Add(1)
				default:
					t.Errorf("SendWave: got error %v, want nil or a conflict", err)
				}
			})
			if len(winners) != 1 || lost.Load() != 49 {
				t.Fatalf("got %d winners and %d losers, want 1 and 49", len(winners), lost.Load())
			}
			send(t, rs.ls[0], rs.st, winners[0], nil)
			race(50, func(i int) {
				if _, _, err := rs.pick(i).SendWave(t.Context(), "r-1", 1, ""); !isRefused(err) {
					t.Errorf("SendWave of a sent wave: got error %v, want a refusal", err)
				}
			})
			_, ro := rollout(t, rs.st, "r-1")
			r, _ := rs.st.Get(t.Context(), "r-1")
			if _, all, _ := answered(r); len(all) != 12 || ro.Waves[1].Ended.IsZero() {
				t.Errorf("got %d answers and wave 1 %+v, want 12 answers, wave 1 ended", len(all), ro.Waves[1])
			}
		})
	}
}

// TestContinueExactlyOnce: of 50 Continues on a paused request one wins,
// and the rest is then claimed once.
func TestContinueExactlyOnce(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			rs := b.open(t)
			canaryDone(t, rs, "r-1")
			// The canary failed after all (as if it had never completed).
			rs.st.UpdateJob(t.Context(), "job-r-1-i00", func(j *store.Job) error { j.Status = upgrade.JobFailed; return nil })
			if _, err := rs.ls[0].Pause(t.Context(), "r-1"); err != nil {
				t.Fatalf("Pause: %v", err)
			}
			var continued, sent atomic.Int32
			race(50, func(i int) {
				l := rs.pick(i)
				if _, err := l.Continue(t.Context(), "r-1", "U1"); err == nil {
					continued.Add(1)
				} else if !isConflict(err, store.Submitted) && !isConflict(err, store.Submitting) {
					t.Errorf("Continue: got error %v, want nil or a conflict", err)
				}
				// Every clicker's bot then asks what is due and sends it.
				if _, _, err := l.SendWave(t.Context(), "r-1", 1, "U1"); err == nil {
					sent.Add(1)
				}
			})
			if continued.Load() != 1 || sent.Load() != 1 {
				t.Errorf("got %d Continues won and wave 1 claimed %d times, want 1 and 1", continued.Load(), sent.Load())
			}
		})
	}
}

// TestStopRacesSendWave: a Stop and a wave claim at the same moment never
// both take effect: either the Stop wins and the wave is never claimed, or
// the claim wins and the Stop lets no further batch of it go, ending it in
// stopped.
func TestStopRacesSendWave(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			rs := b.open(t)
			outcomes := map[string]int{}
			for round := range 30 {
				id := fmt.Sprintf("r-%d", round)
				canaryDone(t, rs, id)
				var s *Send
				var sendErr, stopErr error
				var stopped store.Request
				race(2, func(i int) {
					if i == 0 {
						_, s, sendErr = rs.ls[0].SendWave(t.Context(), id, 1, "")
					} else {
						stopped, stopErr = rs.ls[1].Stop(t.Context(), id, "U2")
					}
				})
				if stopErr != nil {
					t.Fatalf("round %d: Stop: got error %v, want nil", round, stopErr)
				}
				switch {
				case sendErr != nil:
					// The Stop won: the request is stopped, the wave never
					// started.
					if !isConflict(sendErr, store.Stopped) || stopped.State != store.Stopped {
						t.Fatalf("round %d: got SendWave error %v and state %s, want a conflict and stopped", round, sendErr, stopped.State)
					}
					outcomes["stop first"]++
				default:
					// The claim won: the Stop is recorded, and no batch of
					// the wave goes from now on; its end stops the request.
					if stopped.State != store.Submitting {
						t.Fatalf("round %d: both won: wave claimed and request %s", round, stopped.State)
					}
					if err := rs.ls[0].BeginBatch(t.Context(), s, s.Batches[0].InstanceIDs); !errors.Is(err, ErrStopped) {
						t.Fatalf("round %d: BeginBatch after Stop: got error %v, want ErrStopped", round, err)
					}
					r, err := rs.ls[0].EndSend(t.Context(), s)
					if err != nil || r.State != store.Stopped {
						t.Fatalf("round %d: EndSend: got %s, %v; want stopped", round, r.State, err)
					}
					outcomes["claim first"]++
				}
				if _, _, err := rs.ls[1].SendWave(t.Context(), id, 1, ""); !isConflict(err, store.Stopped) {
					t.Fatalf("round %d: SendWave after Stop: got error %v, want a conflict (stopped)", round, err)
				}
			}
			t.Logf("outcomes: %v", outcomes)
		})
	}
}

// TestRecoverOneWinner: of replicas recovering a wave whose sender died,
// one takes it over.
func TestRecoverOneWinner(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			rs := b.open(t)
			canaryDone(t, rs, "r-1")
			_, s, err := rs.ls[0].SendWave(t.Context(), "r-1", 1, "")
			if err != nil {
				t.Fatal(err)
			}
			if err := rs.ls[0].BeginBatch(t.Context(), s, s.Batches[0].InstanceIDs); err != nil {
				t.Fatal(err)
			}
			rs.clock.Advance(testLease)
			var wins, held atomic.Int32
			race(50, func(i int) {
				_, rec, err := rs.pick(i).Recover(t.Context(), "r-1")
				switch {
				case err == nil:
					wins.Add(1)
					if len(rec.Recovered.Unknown) != 10 || len(rec.Recovered.Unsent) != 1 {
						t.Errorf("got recovery %+v, want 10 unknown, 1 unsent", rec.Recovered)
					}
				case errors.Is(err, ErrHeld):
					held.Add(1)
				default:
					t.Errorf("Recover: got error %v, want nil or ErrHeld", err)
				}
			})
			if wins.Load() != 1 || held.Load() != 49 {
				t.Errorf("got %d winners and %d held, want 1 and 49", wins.Load(), held.Load())
			}
		})
	}
}
