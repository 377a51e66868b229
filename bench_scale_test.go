package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/config"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/slacktest"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store/storetest"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// seedStore writes n finished requests (each with one reported job) and
// running requests with one running job each into the bbolt file at path,
// before a bot opens it; it returns the running jobs' IDs.
func seedStore(tb testing.TB, path string, finished, running int) []string {
	tb.Helper()
	st, err := store.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer st.Close()
	return seed(tb, st, finished, running)
}

// seed writes the requests and jobs of seedStore into st, many at once so
// that their writes share commits.
func seed(tb testing.TB, st interface {
	Create(context.Context, store.Request) error
	PutJob(context.Context, store.Job) error
}, finished, running int) []string {
	tb.Helper()
	plan := []byte(`{"refs":["x"],"targets":[],"batches":[]}`)
	long := time.Now().Add(-time.Hour)
	jobs := make([]string, running)
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	for range 32 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= finished+running {
					return
				}
				id := fmt.Sprintf("r-seed%07d", i)
				r := store.Request{ID: id, State: store.Done, Requester: alice, Channel: opsChannel, Plan: plan, CreatedAt: long}
				j := store.Job{ID: fmt.Sprintf("job-%07d", i), RequestID: id, InstanceID: fmt.Sprintf("i-%07d", i), InstanceName: "db", SubmittedAt: time.Now(), Status: upgrade.JobCompleted, Reported: true}
				if i >= finished {
					r.State, j.Status, j.Reported = store.Submitted, upgrade.JobRunning, false
					jobs[i-finished] = j.ID
				}
				if err := st.Create(tb.Context(), r); err != nil {
					failed.Store(err)
					return
				}
				if err := st.PutJob(tb.Context(), j); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, ok := failed.Load().(error); ok {
		tb.Fatal(err)
	}
	return jobs
}

// decoded is how many records the running bot's store has decoded.
func (h *harness) decoded() int64 {
	return h.main.Store.(interface{ Decoded() int64 }).Decoded()
}

// The follower's cost follows open work, not history: two ticks of every
// loop read the same few records whether the store holds 10 or 3,000
// finished requests (counted, not timed).
func TestTickCostFollowsOpenWork(t *testing.T) {
	var mu sync.Mutex
	cost := map[int]int64{}
	t.Run("stores", func(t *testing.T) {
		for _, past := range []int{10, 3000} {
			t.Run(fmt.Sprint(past), func(t *testing.T) {
				t.Parallel()
				h := newHarness(t, func(c *config.Config) { seedStore(t, c.Store, past, 2) })
				h.quiesce()
				// The fewest of three windows: whether a running job's
				// read (due after a backoff) falls into a window is timing,
				// not history.
				least := int64(-1)
				for range 3 {
					before := h.decoded()
					h.quiesce()
					if n := h.decoded() - before; least < 0 || n < least {
						least = n
					}
				}
				mu.Lock()
				cost[past] = least
				mu.Unlock()
			})
		}
	})
	t.Logf("records decoded in two ticks: %v", cost)
	if cost[3000] > 2*cost[10]+10 || cost[3000] > 100 {
		t.Errorf("records decoded in two ticks: %d with 10 finished requests, %d with 3,000; want about the same few (ticks vary by one)", cost[10], cost[3000])
	}
}

// BenchmarkSlashCommandBurst sends 500 slash commands at 100/s and at
// 500/s from 500 people (3 instances each) through the fake Slack to the real bot on an
// on-disk store, and reports the plans delivered, the busy replies, the
// plan latency (slash command sent → plan posted) and the store's commits
// (fsync rounds) per command.
//
//	go test -run '^$' -bench SlashCommandBurst -benchtime 1x .
func BenchmarkSlashCommandBurst(b *testing.B) {
	for _, rate := range []int{100, 500} {
		b.Run(fmt.Sprintf("rate=%d", rate), func(b *testing.B) { burst(b, 500, rate) })
	}
}

// burst sends n slash commands at rate a second; see BenchmarkSlashCommandBurst.
func burst(b *testing.B, n, rate int) {
	for range b.N {
		h := newHarness(b, func(c *config.Config) {
			c.AllowedUsers = []string{"*"}
			c.LogLevel = "info"
		})
		insts := h.addInstances("db", "cassandra", 30)
		commits := func() int64 { return h.main.Store.(*store.Bolt).Commits() }
		before := commits()
		sent := make([]time.Time, n)
		urls := make([]string, n)
		var wg sync.WaitGroup
		tick := time.NewTicker(time.Second / time.Duration(rate))
		start := time.Now()
		for i := range n {
			<-tick.C
			wg.Go(func() {
				text := fmt.Sprintf("%s %s %s", insts[i%30].Name, insts[(i+1)%30].Name, insts[(i+2)%30].Name)
				sent[i] = time.Now()
				ack, err := h.slack.SlashCommand(h.ctx(), slacktest.SlashCommand{UserID: fmt.Sprintf("U%06d", i), ChannelID: opsChannel, Command: "/geminidb-patch", Text: text})
				if err != nil {
					b.Error(err)
					return
				}
				urls[i] = ack.ResponseURL
			})
		}
		tick.Stop()
		wg.Wait()
		answered := func() map[string]slacktest.Call {
			got := map[string]slacktest.Call{}
			for _, c := range h.slack.CallsTo("response_url") {
				if _, ok := got[c.URL]; !ok && (strings.Contains(c.Text, "Patch plan") || strings.Contains(c.Text, "busy")) {
					got[c.URL] = c
				}
			}
			return got
		}
		if err := h.slack.WaitFor(h.ctx(), "an answer to every command", func(*slacktest.Server) bool { return len(answered()) >= n }); err != nil {
			b.Fatal(err)
		}
		elapsed := time.Since(start)
		got := answered()
		var plans, busy int
		var lat []time.Duration
		for i, u := range urls {
			c := got[u]
			if strings.Contains(c.Text, "busy") {
				busy++
				continue
			}
			plans++
			lat = append(lat, c.At.Sub(sent[i]))
		}
		slices.Sort(lat)
		b.ReportMetric(float64(plans), "plans")
		b.ReportMetric(float64(busy), "busy")
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		b.ReportMetric(float64(commits()-before)/float64(n), "commits/cmd")
		b.ReportMetric(elapsed.Seconds(), "burst-s")
		h.stop()
	}
}

// BenchmarkPollThousandJobs follows 1,000 running jobs whose every read
// takes 250 ms and reports how long the first poll took to read them all
// (it must stay within the 30 s interval).
//
//	go test -run '^$' -bench PollThousandJobs -benchtime 1x .
func BenchmarkPollThousandJobs(b *testing.B) {
	for range b.N {
		h := newHarness(b, func(c *config.Config) {
			c.PollInterval = 30 * time.Second
			c.LogLevel = "info"
		})
		// Seed with the bot stopped, so its first poll finds every job.
		h.stop()
		jobs := seedStore(b, h.cfg.Store, 0, 1000)
		for _, j := range jobs {
			h.gdb.SetJob(j, upgrade.JobRunning, "10%", "")
		}
		h.gdb.SetDelay("/jobs", 250*time.Millisecond)
		start := time.Now()
		h.start()
		if err := h.slack.WaitFor(h.ctx(), "every job read", func(*slacktest.Server) bool {
			return h.gdb.Calls("/jobs") >= len(jobs)
		}); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(time.Since(start).Seconds(), "s-to-read-1000-jobs")
		h.stop()
	}
}

// BenchmarkPollTwoReplicas follows 1,000 running jobs from two replicas on
// one Redis for three poll intervals and reports the job reads per job per
// interval: 1 when the poll claim works, up to 2 without it.
//
//	go test -run '^$' -bench PollTwoReplicas -benchtime 1x .
func BenchmarkPollTwoReplicas(b *testing.B) {
	for range b.N {
		for _, replicas := range []int{1, 2} {
			addr := storetest.StartRedis(b)
			h := newHarness(b, func(c *config.Config) {
				c.Store = "redis://" + addr + "/0"
				c.PollInterval = 1 * time.Second
				c.LogLevel = "info"
			})
			// Seed with the bot stopped, so its first poll finds every job.
			h.stop()
			st, err := store.OpenRedis(context.Background(), h.cfg.Store)
			if err != nil {
				b.Fatal(err)
			}
			jobs := seed(b, st, 0, 1000)
			_ = st.Close()
			for _, j := range jobs {
				h.gdb.SetJob(j, upgrade.JobRunning, "10%", "")
			}
			h.start()
			if replicas == 2 {
				h.startReplica()
			}
			before, start := h.gdb.Calls("/jobs"), time.Now()
			intervals := 3
			time.Sleep(time.Duration(intervals) * time.Second)
			reads := h.gdb.Calls("/jobs") - before
			b.ReportMetric(float64(reads)/float64(len(jobs))/time.Since(start).Seconds(), fmt.Sprintf("reads/job/interval-%dreplica", replicas))
			h.stop()
		}
	}
}
