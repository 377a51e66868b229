package main

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/config"

	"github.com/redis/go-redis/v9"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/slacktest"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store/storetest"
)

// startReplica runs a second bot process-equivalent (NewMain + Run) with the
// harness's environment; Slack spreads envelopes over both connections.
func (h *harness) startReplica() {
	h.t.Helper()
	cfg := h.cfg
	if err := cfg.Validate(); err != nil {
		h.t.Fatal(err)
	}
	cfg.Now = h.clock.Now
	before := h.slack.Connections()
	m, err := NewMain(cfg, h.logs)
	if err != nil {
		h.t.Fatalf("second replica: %v", err)
	}
	h.replicas = append(h.replicas, m)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	h.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				h.t.Errorf("replica stopped with %v", err)
			}
		case <-time.After(15 * time.Second):
			h.t.Error("replica did not stop")
		}
		_ = m.Close()
	})
	if err := h.slack.WaitConnections(h.ctx(), before+1); err != nil {
		h.t.Fatal(err)
	}
}

// Two replicas sharing a Redis store: a plan made by one is confirmed
// through the other, clicks spread over both submit exactly once, and each
// job's end is reported once although both follow it.
func TestTwoReplicasShareARedisStore(t *testing.T) {
	t.Parallel()
	addr := storetest.StartRedis(t)
	h := newHarness(t, func(c *config.Config) {
		c.Store = "redis://" + addr + "/0"
		c.CommandsPerMin = 1000
	}, slacktest.WithRoundRobin())
	h.startReplica()
	insts := h.addInstances("db", "cassandra", 3)
	names := insts[0].Name + " " + insts[1].Name + " " + insts[2].Name

	// Envelopes alternate between the replicas: the command goes to one,
	// this click to the other, which knows the plan only through Redis.
	id, _, ack := h.plan(alice, names)
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 0)
	ts := h.parent(id).TS
	h.threadText(ts, "3 submitted")
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Go(func() { h.click(alice, "patch_confirm", id, ack.ResponseURL, i%2) })
	}
	wg.Wait()
	h.assertBatchCalls(1, "one submission across replicas")

	for _, in := range insts {
		h.gdb.CompleteJob(h.gdb.JobsFor(in.ID)[0], "3.11.3.5")
	}
	h.threadText(ts, "finished", "3.11.3.2 → 3.11.3.5")
	h.quiesce()
	for _, in := range insts {
		job := h.gdb.JobsFor(in.ID)[0]
		if n := h.count(ts, job+"` Completed"); n != 1 {
			t.Errorf("job of %s reported %d times by two replicas, want once", in.Name, n)
		}
	}
	if n := h.count(ts, "finished:"); n != 1 {
		t.Errorf("final summary posted %d times, want once", n)
	}
}

// A replica that starts while another is submitting leaves that submission
// alone: the submitter holds a live lease.
func TestReplicaStartingDuringASubmission(t *testing.T) {
	t.Parallel()
	addr := storetest.StartRedis(t)
	h := newHarness(t, func(c *config.Config) { c.Store = "redis://" + addr + "/0" })
	in := h.addInstances("db", "cassandra", 1)[0]
	h.gdb.SetDelay("/instances/db-upgrade", 3*time.Second)
	id, _, ack := h.plan(alice, in.Name)
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 0)
	if err := h.slack.WaitFor(h.ctx(), "batch call in flight", func(*slacktest.Server) bool {
		return h.gdb.Calls("/instances/db-upgrade") == 1
	}); err != nil {
		t.Fatal(err)
	}
	h.startReplica()
	// The premise: the new replica ran its start-up recovery while the
	// request was still being submitted.
	if r, err := h.main.Store.Get(t.Context(), id); err != nil || r.State != store.Submitting {
		t.Fatalf("request is %q (%v) after the replica started, want submitting: the test did not overlap", r.State, err)
	}
	ts := h.parent(id).TS
	h.threadText(ts, "1 submitted")
	h.quiesce()
	if n := h.count(ts, "stopped while submitting"); n != 0 {
		t.Errorf("the new replica took over a live submission (%d recovery notes)", n)
	}
	h.gdb.CompleteJob(h.gdb.JobsFor(in.ID)[0], "3.11.3.5")
	h.threadText(ts, "finished")
}

// Replicas on one Redis share the per-person command limit and recognise a
// redelivered command that lands on the other replica.
func TestReplicasShareLimitsAndRedeliveries(t *testing.T) {
	t.Parallel()
	addr := storetest.StartRedis(t)
	h := newHarness(t, func(c *config.Config) {
		c.Store = "redis://" + addr + "/0"
		c.CommandsPerMin = 3
	}, slacktest.WithRoundRobin())
	h.startReplica()
	in := h.addInstances("db", "cassandra", 1)[0]

	// A command and its redelivery go to different replicas: one plan.
	cmd := slacktest.SlashCommand{UserID: alice, ChannelID: opsChannel, Command: "/geminidb-patch", Text: in.Name + " --dry-run", TriggerID: "trig-r", ResponseURL: h.slack.ResponseURL()}
	for retry := range 2 {
		cmd.RetryAttempt = retry
		if _, err := h.slack.SlashCommand(h.ctx(), cmd); err != nil {
			t.Fatal(err)
		}
	}
	h.reply(cmd.ResponseURL, "patch plan")
	h.quiesce()
	if n := strings.Count(h.repliesTo(cmd.ResponseURL), "patch plan"); n != 1 {
		t.Errorf("%d plans for one command delivered to two replicas, want 1", n)
	}

	// Three commands a minute in all, whichever replica takes them.
	for range 2 {
		h.reply(h.slash(alice, opsChannel, in.Name+" --dry-run").ResponseURL, "patch plan")
	}
	h.reply(h.slash(alice, opsChannel, in.Name+" --dry-run").ResponseURL, "at most 3 commands per minute")
}

// A store that fails the confirm's compare-and-swap is not a lost race:
// the clicker hears that nothing was sent and to click again, an error is
// logged, nothing is patched, and the request is left planned, so a second
// click (once the store works) patches exactly once.
func TestStoreFailureOnConfirmIsToldNotSwallowed(t *testing.T) {
	t.Parallel()
	addr := storetest.StartRedis(t)
	h := newHarness(t, func(c *config.Config) {
		c.Store = "redis://" + addr + "/0"
	})
	insts := h.addInstances("db", "cassandra", 1)
	id, _, ack := h.plan(alice, insts[0].Name)

	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = rdb.Close() })
	// Redis refuses every write (NOREPLICAS) while reads still work.
	if err := rdb.ConfigSet(h.ctx(), "min-replicas-to-write", "1").Err(); err != nil {
		t.Fatal(err)
	}
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 0)
	h.ephemeralTo(alice, "nothing was sent. Click again")
	if !strings.Contains(h.logs.String(), `"level":"error"`) || strings.Contains(h.logs.String(), "lost the race") {
		t.Errorf("a store failure was not logged as an error, or was called a lost race:\n%s", h.logs.String())
	}
	h.assertBatchCalls(0, "the decision could not be recorded")

	if err := rdb.ConfigSet(h.ctx(), "min-replicas-to-write", "0").Err(); err != nil {
		t.Fatal(err)
	}
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 0)
	h.threadText(h.parent(id).TS, "Batch results")
	h.assertBatchCalls(1, "the second click, once the store worked")
}
