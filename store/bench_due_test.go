package store

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store/storetest"
)

// seedPlans adds open open plans, one per person, expiring in an hour, and
// due plans already past their expiry, to s.
func seedPlans(tb testing.TB, s backend, now time.Time, open, due int) {
	tb.Helper()
	for i := range open {
		r := Request{ID: fmt.Sprintf("open-%05d", i), State: Planned, Requester: fmt.Sprintf("U%05d", i), ExpiresAt: now.Add(time.Hour)}
		if err := s.Create(tb.Context(), r); err != nil {
			tb.Fatal(err)
		}
	}
	for i := range due {
		r := Request{ID: fmt.Sprintf("due-%05d", i), State: Planned, Requester: "U-due", ExpiresAt: now.Add(-time.Minute)}
		if err := s.Create(tb.Context(), r); err != nil {
			tb.Fatal(err)
		}
	}
}

// benchmarkDueReads measures the reads of issue 20 on s, with 1 and with
// 1,000 open plans from 1,000 people and 5 due: OpenPlans (one person's
// count), Due (what housekeeping must do now) and, for comparison, the
// List of the open states the bot used to count and find due plans with.
func benchmarkDueReads(b *testing.B, open func(b *testing.B) backend) {
	now := time.Now()
	for _, plans := range []int{1, 1_000} {
		s := open(b)
		seedPlans(b, s, now, plans, 5)
		b.Run(fmt.Sprintf("OpenPlans/open=%d", plans), func(b *testing.B) {
			for b.Loop() {
				if n, err := s.OpenPlans(b.Context(), "U00000", now); err != nil || n != 1 {
					b.Fatalf("OpenPlans: got %d, %v; want 1", n, err)
				}
			}
		})
		b.Run(fmt.Sprintf("Due/open=%d", plans), func(b *testing.B) {
			for b.Loop() {
				if rs, err := s.Due(b.Context(), now, 100); err != nil || len(rs) != 5 {
					b.Fatalf("Due: got %d, %v; want 5", len(rs), err)
				}
			}
		})
		b.Run(fmt.Sprintf("List(planned)/open=%d", plans), func(b *testing.B) {
			for b.Loop() {
				if rs, err := s.List(b.Context(), Planned, AwaitingApproval); err != nil || len(rs) < plans+5 {
					b.Fatalf("List: got %d, %v; want at least %d", len(rs), err, plans+5)
				}
			}
		})
	}
}

func BenchmarkBoltDueReads(b *testing.B) {
	benchmarkDueReads(b, func(b *testing.B) backend { return seedBolt(b, 1_000) })
}

func BenchmarkRedisDueReads(b *testing.B) {
	addr := storetest.StartRedis(b)
	n := 0
	benchmarkDueReads(b, func(b *testing.B) backend {
		n++
		s, err := OpenRedisWith(b.Context(), "redis://"+addr, RedisOptions{Prefix: fmt.Sprintf("bench-%d:", n)})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = s.Close() })
		return s
	})
}

// BenchmarkBoltCreatePlan measures the Create of a plan from many
// goroutines at once, lazy (without waiting for fsync, as the store does)
// and durable (WithDurable, as every plan was before).
func BenchmarkBoltCreatePlan(b *testing.B) {
	for _, mode := range []string{"lazy", "durable"} {
		b.Run(mode, func(b *testing.B) {
			s := seedBolt(b, 0)
			ctx := b.Context()
			if mode == "durable" {
				ctx = WithDurable(ctx)
			}
			var n atomic.Int64
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					id := fmt.Sprintf("p-%d", n.Add(1))
					if err := s.Create(ctx, Request{ID: id, State: Planned, Requester: "U1", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(s.Commits()-s.commits.unsynced.Load())/float64(b.N), "fsyncs/op")
		})
	}
}
