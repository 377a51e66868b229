package patch

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// unrecordingStore is a bbolt store whose writes of a batch's answers
// (EndBatch: an update that clears InFlight) fail, as a full disk or a
// Redis blip would make them.
type unrecordingStore struct {
	*store.Bolt
	failing atomic.Bool
	tries   atomic.Int32
}

var errDiskFull = errors.New("disk full")

func (s *unrecordingStore) Update(ctx context.Context, id string, mutate func(*store.Request) error) (store.Request, error) {
	return s.Bolt.Update(ctx, id, func(x *store.Request) error {
		inFlight := len(x.InFlight) > 0
		if err := mutate(x); err != nil {
			return err
		}
		if s.failing.Load() && inFlight && len(x.InFlight) == 0 {
			s.tries.Add(1)
			return errDiskFull
		}
		return nil
	})
}

// When the answers of a batch cannot be recorded, the write is tried
// again; then no further batch is sent and the batch stays in flight, so
// the takeover reports it as unknown (its job followed), never as "not
// sent" (issue 19).
func TestUnrecordedBatchStopsTheWave(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bolt := openBolt(t, filepath.Join(t.TempDir(), "s.db"), time.Now)
		st := &unrecordingStore{Bolt: bolt}
		cloud := &fakeCloud{ins: map[string]upgrade.Instance{}, status: map[string]string{}}
		var ins []upgrade.Instance
		for i := range 12 {
			in := inst(fmt.Sprintf("i-%02d", i), "cassandra", "")
			ins = append(ins, in)
			cloud.ins[in.ID] = in
		}
		rep := &fakeReporter{}
		rn := NewRunner(RunnerOptions{Store: st, Fleet: oneSite{Site{Name: "default", Cloud: cloud}},
			Reporter: rep, Log: zerolog.Nop(), PollInterval: 30 * time.Second})
		ctx := context.Background()
		create(t, rn.Lifecycle(), "r-1", Options{}, ins...)
		st.failing.Store(true)
		if _, err := rn.Confirm(ctx, "r-1", "U1", ""); err != nil {
			t.Fatalf("Confirm: %v", err)
		}
		settle(rn)
		if got := cloud.calls(); len(got) != 1 {
			t.Fatalf("%d batch calls, want 1: no batch after one whose answers were not recorded", len(got))
		}
		if n := st.tries.Load(); n < 2 {
			t.Errorf("the answers' write was tried %d times, want it tried again", n)
		}
		r, _ := st.Get(ctx, "r-1")
		if len(r.InFlight) != 10 {
			t.Fatalf("InFlight %v, want the unrecorded batch of 10 kept", r.InFlight)
		}
		s := &Send{RequestID: "r-1", Wave: 0, Claim: Claim{Token: r.Owner, TTL: time.Minute}}
		if err := rn.Lifecycle().BeginBatch(ctx, s, []string{"i-10"}); !errors.Is(err, ErrUnrecorded) {
			t.Errorf("BeginBatch while a batch is in flight: got %v, want ErrUnrecorded", err)
		}
		// The store recovers; once the claim runs out a tick takes over.
		st.failing.Store(false)
		time.Sleep(rn.Lease() + time.Minute)
		rn.Tick(ctx)
		settle(rn)
		r, _ = st.Get(ctx, "r-1")
		_, res, _ := PlanOf(r)
		byID := map[string]upgrade.UpgradeResult{}
		for _, a := range res {
			byID[a.InstanceID] = a
		}
		for _, in := range ins[:10] {
			if a := byID[in.ID]; !a.Submitted() {
				t.Errorf("%s: answer %+v, want its job (recorded before the answers)", in.ID, a)
			}
		}
		for _, in := range ins[10:] {
			if a := byID[in.ID]; a.ErrorCode != CodeNotSent {
				t.Errorf("%s: answer %+v, want not sent", in.ID, a)
			}
		}
		if got := cloud.calls(); len(got) != 1 || slices.Contains(got[0], "i-10") {
			t.Errorf("batch calls %v, want only the first", got)
		}
	})
}
