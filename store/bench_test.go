package store

import (
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// openStates are the states the follower and the command handlers list.
var openStates = []State{Planned, AwaitingApproval, Approved, Submitting, Submitted}

// seedBolt fills a new store with past done requests, each with two
// reported jobs, and some open work: 5 planned requests and 10 submitted
// ones with 10 active jobs each. It writes through the same code as the
// methods, in large transactions, so that seeding 50,000 requests does not
// take 150,000 commits.
func seedBolt(tb testing.TB, past int) *Bolt {
	tb.Helper()
	s, err := Open(filepath.Join(tb.TempDir(), "bench.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	plan := []byte(`{"targets":[` + fmt.Sprintf(`{"id":"%032d","name":"db","version":"4.0.1"}`, 0) + `]}`)
	put := func(tx *bolt.Tx, r Request, jobs []Job) error {
		r.Plan, r.CreatedAt, r.UpdatedAt = plan, t0, t0
		if _, err := putRequest(tx, nil, r); err != nil {
			return err
		}
		for _, j := range jobs {
			if _, err := putJob(tx, nil, j); err != nil {
				return err
			}
		}
		return nil
	}
	const perTx = 5000
	for start := 0; start < past; start += perTx {
		err := s.db.Update(func(tx *bolt.Tx) error {
			for i := start; i < min(start+perTx, past); i++ {
				id := fmt.Sprintf("old-%06d", i)
				jobs := []Job{
					{ID: id + "-a", RequestID: id, Status: "Completed", Reported: true},
					{ID: id + "-b", RequestID: id, Status: "Completed", Reported: true},
				}
				if err := put(tx, Request{ID: id, State: Done}, jobs); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			tb.Fatal(err)
		}
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		for i := range 5 {
			if err := put(tx, Request{ID: fmt.Sprintf("planned-%d", i), State: Planned}, nil); err != nil {
				return err
			}
		}
		for i := range 10 {
			id := fmt.Sprintf("submitted-%d", i)
			var jobs []Job
			for k := range 10 {
				jobs = append(jobs, Job{ID: fmt.Sprintf("%s-%d", id, k), RequestID: id, Status: "Running"})
			}
			if err := put(tx, Request{ID: id, State: Submitted}, jobs); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// BenchmarkBoltReads measures what a follower tick reads, List of the open
// states and ActiveJobs, with 1,000 and with 50,000 past requests: with the
// indexes, both cost about the same.
func BenchmarkBoltReads(b *testing.B) {
	for _, past := range []int{1_000, 50_000} {
		s := seedBolt(b, past)
		b.Run(fmt.Sprintf("List(open)/past=%d", past), func(b *testing.B) {
			for b.Loop() {
				if rs, err := s.List(b.Context(), openStates...); err != nil || len(rs) != 15 {
					b.Fatalf("List: got %d, %v; want 15 requests", len(rs), err)
				}
			}
		})
		b.Run(fmt.Sprintf("ActiveJobs/past=%d", past), func(b *testing.B) {
			for b.Loop() {
				if js, err := s.ActiveJobs(b.Context()); err != nil || len(js) != 100 {
					b.Fatalf("ActiveJobs: got %d, %v; want 100 jobs", len(js), err)
				}
			}
		})
	}
}

// writeModes are the ways of committing the Create+Transition benchmarks
// compare: "group" is the store as it is (writes that arrive during a
// commit share the next one); "solo" commits every write on its own, as
// before; "bbolt-batch" is bbolt's DB.Batch, which waits up to 10 ms for a
// batch to fill.
var writeModes = []string{"solo", "bbolt-batch", "group"}

// setWriteMode makes s commit as mode says.
func setWriteMode(s *Bolt, mode string) {
	switch mode {
	case "solo":
		s.writeVia = s.db.Update
	case "bbolt-batch":
		s.writeVia = s.db.Batch
	}
}

// BenchmarkBoltCreateTransition measures a Create followed by a Transition
// from many goroutines at once (8 per CPU), as concurrent commands do, in
// each of writeModes.
func BenchmarkBoltCreateTransition(b *testing.B) {
	for _, mode := range writeModes {
		b.Run(mode, func(b *testing.B) {
			s, err := Open(filepath.Join(b.TempDir(), "bench.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			setWriteMode(s, mode)
			var n atomic.Int64
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					id := fmt.Sprintf("r-%d", n.Add(1))
					if err := s.Create(b.Context(), Request{ID: id, State: Planned}); err != nil {
						b.Error(err)
						return
					}
					if _, err := s.Transition(b.Context(), id, []State{Planned}, Submitting, "U1", nil); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkBoltCreateTransitionSerial is BenchmarkBoltCreateTransition
// from one goroutine: a lone writer must not be slower for the grouping.
func BenchmarkBoltCreateTransitionSerial(b *testing.B) {
	for _, mode := range writeModes {
		b.Run(mode, func(b *testing.B) {
			s, err := Open(filepath.Join(b.TempDir(), "bench.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			setWriteMode(s, mode)
			i := 0
			for b.Loop() {
				i++
				id := fmt.Sprintf("r-%d", i)
				if err := s.Create(b.Context(), Request{ID: id, State: Planned}); err != nil {
					b.Fatal(err)
				}
				if _, err := s.Transition(b.Context(), id, []State{Planned}, Submitting, "U1", nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
