package patch

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// decodedPerTick runs a rollout of one instance next to idle open plans
// (planned, far from expiry, never due) and returns how many records the
// store decoded for one housekeeping tick and one poll once everything
// settled, and for the tick that sent the rollout's second wave.
func decodedPerTick(t *testing.T, idle int) (quiet, busy int64) {
	var q, b int64
	synctest.Test(t, func(t *testing.T) {
		ins := []upgrade.Instance{inst("i-a", "cassandra", ""), inst("i-b", "cassandra", "")}
		rn, st, cloud, _ := newRunner(t, nil, ins...)
		ctx := context.Background()
		for i := range idle {
			r := store.Request{ID: fmt.Sprintf("r-idle-%04d", i), Requester: fmt.Sprintf("U%04d", i), Channel: "C1", ExpiresAt: time.Now().Add(time.Hour)}
			if _, err := rn.Create(ctx, r, planFor(time.Now(), false, ins...), Options{}); err != nil {
				t.Fatal(err)
			}
		}
		create(t, rn.Lifecycle(), "r-1", Options{Canary: 1}, ins...)
		if _, err := rn.Confirm(ctx, "r-1", "U1", ""); err != nil {
			t.Fatal(err)
		}
		settle(rn)
		round := func() int64 {
			time.Sleep(31 * time.Second)
			before := st.Decoded()
			rn.Tick(ctx)
			rn.Poll(ctx, "default")
			settle(rn)
			return st.Decoded() - before
		}
		round() // the first tick lists every open request once
		round()
		q = round() // the canary's job runs: nothing else is due
		cloud.set("job-i-a", upgrade.JobCompleted)
		round() // the poll sees the canary end and wakes r-1
		b = round()
		if n := len(cloud.calls()); n != 2 {
			t.Errorf("%d batch calls, want 2 (the canary, then the rest)", n)
		}
	})
	return q, b
}

// Records decoded per housekeeping tick do not depend on open plans that
// are not due: 1 idle plan or 1,000, the same count (issue 20).
func TestTickReadsOnlyWhatIsDue(t *testing.T) {
	t.Parallel()
	q1, b1 := decodedPerTick(t, 1)
	q1000, b1000 := decodedPerTick(t, 1000)
	if q1 != q1000 || b1 != b1000 {
		t.Errorf("decoded per tick with 1 idle plan: %d quiet, %d sending; with 1,000: %d, %d; want the same", q1, b1, q1000, b1000)
	}
	if q1 > 4 {
		t.Errorf("decoded %d records in a quiet tick and poll, want at most 4 (the running job and its request)", q1)
	}
	t.Logf("decoded per tick + poll: quiet %d, sending the next wave %d", q1, b1)
}
