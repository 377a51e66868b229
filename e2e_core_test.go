package main

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/config"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/slacktest"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// The seed's example: one instance gets a job, the other DBS.200011.
func TestSeedExample(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	insts := h.addInstances("cass-prod", "cassandra", 2)
	h.gdb.SetUpgradeResult(insts[1].ID, "DBS.200011", "The status of DB instance does not allow the operation.")

	id, planMsg, ack := h.plan(alice, insts[0].Name+", "+insts[1].ID)
	if id == "" {
		t.Fatalf("plan has no Confirm button:\n%s", planMsg.AllText())
	}
	if got := ackText(ack); !strings.Contains(got, "Checking 2 instances") {
		t.Errorf("ack text = %q, want it to say it is checking 2 instances", got)
	}
	if ack.Size > 20*1024 {
		t.Errorf("ack is %d bytes, Slack allows 20 KB", ack.Size)
	}
	for _, in := range insts {
		if !strings.Contains(planMsg.AllText(), in.ID) {
			t.Errorf("plan does not list %s:\n%s", in.ID, planMsg.AllText())
		}
	}
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 0)
	parent := h.parent(id)
	if !strings.Contains(parent.AllText(), "<@"+alice+">") || !strings.Contains(parent.AllText(), "2 GeminiDB instances") {
		t.Errorf("channel message = %q, want it to name the requester and 2 instances", parent.AllText())
	}
	h.threadText(parent.TS, "Batch results")
	jobs := h.gdb.JobsFor(insts[0].ID)
	if len(jobs) != 1 {
		t.Fatalf("fake saw %d jobs for %s, want 1", len(jobs), insts[0].Name)
	}
	thread := h.threadText(parent.TS, jobs[0], "DBS.200011", "The status of DB instance does not allow the operation.")
	if !strings.Contains(thread, insts[1].ID) {
		t.Errorf("thread does not name the failed instance %s:\n%s", insts[1].ID, thread)
	}
	if calls := h.gdb.BatchCalls(); len(calls) != 1 || len(calls[0]) != 2 {
		t.Errorf("batch calls = %v, want one call with both IDs", calls)
	}
	h.reply(ack.ResponseURL, "submitted")
	if len(h.auditEvents("confirmed")) != 1 || len(h.auditEvents("submitted")) != 1 {
		t.Errorf("audit events confirmed=%d submitted=%d, want 1 each", len(h.auditEvents("confirmed")), len(h.auditEvents("submitted")))
	}
}

// 23 instances across both engines: every call ≤ 10 IDs of one engine,
// nothing twice, nothing left out.
func TestTwentyThreeInstancesAcrossEngines(t *testing.T) {
	t.Parallel()
	// One wave of many batch calls: above the fleet guard the plan would
	// go canary first and in waves (TestWavesAndErrorBudget tests that).
	h := newHarness(t, func(c *config.Config) { c.FleetGuard = 1000 })
	cass := h.addInstances("cass", "cassandra", 13)
	influx := h.addInstances("influx", "influxdb", 10)
	engineOf := map[string]string{}
	var names []string
	for _, in := range cass {
		engineOf[in.ID] = "cassandra"
		names = append(names, in.Name)
	}
	for _, in := range influx {
		engineOf[in.ID] = "influxdb"
		names = append(names, in.Name)
	}
	id, _, ack := h.plan(alice, strings.Join(names, "\n"))
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 0)
	parent := h.parent(id)
	h.threadText(parent.TS, "23 submitted")

	seen := map[string]int{}
	for _, call := range h.gdb.BatchCalls() {
		if len(call) > 10 {
			t.Errorf("batch call with %d IDs, want at most 10", len(call))
		}
		engines := map[string]bool{}
		for _, id := range call {
			seen[id]++
			engines[engineOf[id]] = true
		}
		if len(engines) != 1 {
			t.Errorf("batch call mixes engines %v", engines)
		}
	}
	if len(seen) != 23 {
		t.Errorf("batch calls covered %d instances, want 23", len(seen))
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("instance %s was sent %d times, want once", id, n)
		}
	}
}

// Unknown instances, other engines and no patch available are skipped with
// the reason; only the rest is patched.
func TestSkippedInstances(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	ok := h.addInstances("good", "cassandra", 1)[0]
	mongo := h.addInstances("mongo", "mongodb", 1)[0]
	nopatch := h.addInstances("nopatch", "influxdb", 1)[0]
	h.gdb.SetInstance(nopatch.ID, func(in *upgrade.Instance) { in.PatchAvailable = false })

	id, planMsg, ack := h.plan(alice, strings.Join([]string{ok.Name, "ghost-db", mongo.Name, nopatch.Name}, " "))
	text := planMsg.AllText()
	for _, want := range []string{"ghost-db", "not found", "mongodb", "no patch available", "1 instance to patch", "3 skipped"} {
		if !strings.Contains(text, want) {
			t.Errorf("plan lacks %q:\n%s", want, text)
		}
	}
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 0)
	h.threadText(h.parent(id).TS, "1 submitted")
	calls := h.gdb.BatchCalls()
	if len(calls) != 1 || len(calls[0]) != 1 || calls[0][0] != ok.ID {
		t.Errorf("batch calls = %v, want exactly [[%s]]", calls, ok.ID)
	}
}

// Nothing patchable: the plan has no button and nothing is stored to confirm.
func TestNothingPatchableHasNoButton(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	id, planMsg, _ := h.plan(alice, "ghost-1 ghost-2")
	if id != "" {
		t.Errorf("plan with nothing patchable has a Confirm button (%s):\n%s", id, planMsg.AllText())
	}
	if !strings.Contains(planMsg.AllText(), "Nothing can be patched") {
		t.Errorf("plan = %q, want it to say nothing can be patched", planMsg.AllText())
	}
}

// A whole-call 400 or 500 from the batch API is shown with its code and
// message, and the batch POST is not retried.
func TestBatchCallErrors(t *testing.T) {
	tests := []struct {
		name          string
		status        int
		code, message string
	}{
		{"400", 400, "DBS.280001", "Invalid request parameter instance_ids."},
		{"500", 500, "DBS.200998", "System is busy. Try again later."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, nil)
			insts := h.addInstances("db", "cassandra", 2)
			h.gdb.FailNext("/instances/db-upgrade", tt.status, tt.code, tt.message, 5)
			id, _, ack := h.plan(alice, insts[0].Name+" "+insts[1].Name)
			h.click(alice, "patch_confirm", id, ack.ResponseURL, 0)
			thread := h.threadText(h.parent(id).TS, tt.code, tt.message)
			for _, in := range insts {
				if !strings.Contains(thread, in.ID) {
					t.Errorf("thread does not list %s with the error:\n%s", in.ID, thread)
				}
			}
			h.assertBatchCalls(1, "never retried")
		})
	}
}

// Cancel calls nothing and says cancelled; a later Confirm does nothing.
func TestCancel(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	in := h.addInstances("db", "cassandra", 1)[0]
	id, _, ack := h.plan(alice, in.Name)
	h.click(alice, "patch_cancel", id, ack.ResponseURL, 0)
	h.reply(ack.ResponseURL, "cancelled")
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 0)
	h.ephemeralTo(alice, "cancelled")
	h.assertBatchCalls(0, "after cancel")
	if len(h.auditEvents("cancelled")) != 1 {
		t.Errorf("want one cancelled audit event")
	}
}

// A double click and a Slack redelivery never call the batch API twice.
func TestDoubleClickAndRedelivery(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	in := h.addInstances("db", "cassandra", 1)[0]
	h.gdb.SetDelay("/instances/db-upgrade", 200*time.Millisecond)
	id, _, ack := h.plan(alice, in.Name)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() { h.click(alice, "patch_confirm", id, ack.ResponseURL, i/2) })
	}
	wg.Wait()
	h.threadText(h.parent(id).TS, "1 submitted")
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 1)
	h.assertBatchCalls(1, "one submission however often it is clicked")
	parents := 0
	for _, m := range h.slack.Messages(opsChannel) {
		if strings.Contains(m.AllText(), id) {
			parents++
		}
	}
	if parents != 1 {
		t.Errorf("%d channel messages for %s, want 1", parents, id)
	}
}

// A redelivered slash command (retry_attempt > 0) does not plan twice.
func TestSlashCommandRedelivery(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	in := h.addInstances("db", "cassandra", 1)[0]
	cmd := slacktest.SlashCommand{UserID: alice, ChannelID: opsChannel, Command: "/geminidb-patch", Text: in.Name, TriggerID: "trig-1", ResponseURL: h.slack.ResponseURL()}
	if _, err := h.slack.SlashCommand(h.ctx(), cmd); err != nil {
		t.Fatal(err)
	}
	cmd.RetryAttempt = 1 // Slack's redelivery: same trigger, same response URL
	if _, err := h.slack.SlashCommand(h.ctx(), cmd); err != nil {
		t.Fatal(err)
	}
	h.reply(cmd.ResponseURL, "patch plan")
	h.quiesce()
	plans := 0
	for _, c := range h.slack.CallsTo("response_url") {
		if c.URL == cmd.ResponseURL && strings.Contains(c.AllText(), "patch plan") {
			plans++
		}
	}
	if plans != 1 {
		t.Errorf("%d plans for one redelivered command, want 1", plans)
	}
}

// Only the requester can confirm or cancel.
func TestNotTheRequester(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	in := h.addInstances("db", "cassandra", 1)[0]
	id, _, ack := h.plan(alice, in.Name)
	h.click(bob, "patch_confirm", id, ack.ResponseURL, 0)
	h.ephemeralTo(bob, "Only <@"+alice+">")
	h.click(bob, "patch_cancel", id, ack.ResponseURL, 0)
	h.ephemeralTo(bob, "Only <@"+alice+">")
	h.assertBatchCalls(0, "by a stranger's click")
	// The requester can still confirm afterwards.
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 0)
	h.threadText(h.parent(id).TS, "1 submitted")
}

// Slack's disconnect message and a dropped socket both lead to a new
// connection, and the bot keeps answering.
func TestReconnect(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	in := h.addInstances("db", "cassandra", 1)[0]
	h.slack.Disconnect("refresh_requested")
	if err := h.slack.WaitConnections(h.ctx(), 2); err != nil {
		t.Fatalf("no reconnect after disconnect: %v", err)
	}
	h.slack.DropConnections()
	if err := h.slack.WaitConnections(h.ctx(), 3); err != nil {
		t.Fatalf("no reconnect after a dropped socket: %v", err)
	}
	var ack slacktest.Ack
	err := h.slack.WaitFor(h.ctx(), "a slash command acked after reconnecting", func(s *slacktest.Server) bool {
		a, err := s.SlashCommand(h.ctx(), slacktest.SlashCommand{UserID: alice, ChannelID: opsChannel, Command: "/geminidb-patch", Text: in.Name})
		ack = a
		return err == nil
	})
	if err != nil {
		t.Fatal(err)
	}
	h.reply(ack.ResponseURL, "patch plan")
}

// The ack comes before the slow GeminiDB lookup finishes.
func TestAckDoesNotWaitForGeminiDB(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	in := h.addInstances("db", "cassandra", 1)[0]
	h.gdb.SetDelay("/instances", 2*time.Second)
	ack := h.slash(alice, opsChannel, in.Name)
	if got := ackText(ack); !strings.Contains(got, "Checking") {
		t.Errorf("ack text = %q, want the 'Checking…' acknowledgement", got)
	}
	if replies := h.repliesTo(ack.ResponseURL); replies != "" {
		t.Errorf("the plan arrived before the ack returned; the ack waited for GeminiDB: %s", replies)
	}
	h.reply(ack.ResponseURL, "patch plan")
}

// Bad input gets a usage message in the ack, and nothing is looked up.
func TestBadInputIsAnswered(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	tests := []struct{ name, text, want string }{
		{"empty", "", "Usage"},
		{"unknown flag", "db-1 --yolo", "--yolo"},
		{"mention", "<@U123> db-1", "mention"},
		{"junk", strings.Repeat("x!", 2500), ""},
		{"control", "db-1\x07", ""},
		{"too many", manyNames(101), "100"},
		{"help", "help", "status"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ack := h.slash(alice, opsChannel, tt.text)
			got := ackText(ack)
			if got == "" || !strings.Contains(got, tt.want) {
				t.Errorf("ack text = %q, want a message containing %q", got, tt.want)
			}
			if ack.Size > 20*1024 {
				t.Errorf("ack is %d bytes, over Slack's 20 KB", ack.Size)
			}
		})
	}
	if n := h.cloudCalls(); n != 0 {
		t.Errorf("GeminiDB was called %d times for bad input, want 0", n)
	}
}

func manyNames(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "db-%d ", i)
	}
	return b.String()
}

// A revoked app token stops the bot with an error instead of redialling forever.
func TestRevokedAppTokenStopsTheBot(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.slack.RevokeAppToken()
	h.slack.DropConnections()
	select {
	case err := <-h.done:
		if err == nil || !strings.Contains(err.Error(), "refused") || !strings.Contains(err.Error(), "SLACK_APP_TOKEN") {
			t.Errorf("bot stopped with %v, want an error saying Slack refused the credentials and what to check", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("bot kept running with a revoked app token")
	}
	if err := h.main.Close(); err != nil {
		t.Error(err)
	}
	h.main = nil
}

// 100 instances: every message stays within Slack's limits (the fake
// rejects what real Slack rejects), every call ≤ 10 IDs, and the thread
// lists every instance.
func TestHundredInstances(t *testing.T) {
	t.Parallel()
	// One wave of many batch calls: above the fleet guard the plan would
	// go canary first and in waves (TestWavesAndErrorBudget tests that).
	h := newHarness(t, func(c *config.Config) { c.FleetGuard = 1000 })
	insts := append(h.addInstances("cassandra-instance-with-a-long-name", "cassandra", 50),
		h.addInstances("influxdb-instance-with-a-long-name", "influxdb", 50)...)
	names := make([]string, len(insts))
	for i, in := range insts {
		names[i] = in.Name
		if i%7 == 0 {
			h.gdb.SetUpgradeResult(in.ID, "DBS.200011", "The status of DB instance does not allow the operation.")
		}
	}
	id, _, ack := h.plan(alice, strings.Join(names, ","))
	if ack.Size > 20*1024 {
		t.Errorf("ack is %d bytes, over 20 KB", ack.Size)
	}
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 0)
	ts := h.parent(id).TS
	thread := h.threadText(ts, "Batch results")
	err := h.slack.WaitFor(h.ctx(), "every instance in the thread", func(s *slacktest.Server) bool {
		var parts []string
		for _, m := range s.Thread(opsChannel, ts) {
			parts = append(parts, m.AllText())
		}
		thread = strings.Join(parts, "\n")
		for _, in := range insts {
			if !strings.Contains(thread, in.ID) {
				return false
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, thread)
	}
	if calls := h.gdb.BatchCalls(); len(calls) != 10 {
		t.Errorf("%d batch calls, want 10 of 10", len(calls))
	}
	// Every job ends at once: the thread stays readable, each end is
	// reported once, and nothing is lost.
	var jobs []string
	for _, in := range insts {
		jobs = append(jobs, h.gdb.JobsFor(in.ID)...)
	}
	for i, j := range jobs {
		if i%10 == 3 {
			h.gdb.FailJob(j, "Node restart timed out.")
		} else {
			h.gdb.CompleteJob(j, "3.11.3.5")
		}
	}
	thread = h.threadText(ts, "finished:")
	for _, j := range jobs {
		if n := strings.Count(thread, "`"+j+"` Completed") + strings.Count(thread, "`"+j+"` Failed"); n != 1 {
			t.Errorf("job %s reported %d times, want once", j, n)
		}
	}
	if n := len(h.slack.Thread(opsChannel, ts)); n > 16 {
		t.Errorf("a 100-instance patch took %d thread replies, want about 15 at most", n)
	}
	t.Logf("100 instances, %d jobs: %d thread replies", len(jobs), len(h.slack.Thread(opsChannel, ts)))
	for _, c := range h.slack.Calls() {
		if c.Error != "" {
			t.Errorf("Slack rejected %s: %s", c.Method, c.Error)
		}
	}
}

// BenchmarkSlashCommandAck measures the time from Slack sending a slash
// command envelope to receiving the bot's ack, while GeminiDB takes a second
// to answer: the ack must not wait for it (Slack allows 3 s).
func BenchmarkSlashCommandAck(b *testing.B) {
	h := newHarness(b, func(c *config.Config) { c.CommandsPerMin = 1000000; c.LogLevel = "info" })
	in := h.addInstances("db", "cassandra", 1)[0]
	h.gdb.SetDelay("/instances", time.Second)
	var total time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		ack, err := h.slack.SlashCommand(h.ctx(), slacktest.SlashCommand{UserID: alice, ChannelID: opsChannel, Command: "/geminidb-patch", Text: in.Name + " --dry-run", TriggerID: fmt.Sprintf("bench-%d", i)})
		if err != nil {
			b.Fatal(err)
		}
		total += ack.Latency
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N), "µs/ack")
}

// Slack's rate limit (429 with Retry-After) on a thread reply is waited out,
// not lost.
func TestSlackRateLimitIsWaitedOut(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	in := h.addInstances("db", "cassandra", 1)[0]
	id, _, ack := h.plan(alice, in.Name)
	h.slack.RateLimit("chat.postMessage", time.Second, 1)
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 0)
	h.threadText(h.parent(id).TS, "1 submitted")
	limited := 0
	for _, c := range h.slack.CallsTo("chat.postMessage") {
		if c.Status == 429 {
			limited++
		}
	}
	if limited != 1 {
		t.Errorf("%d rate-limited posts, want 1 (the test's premise)", limited)
	}
}

// When the bot cannot post in the channel, nothing is patched and the
// requester is told why.
func TestChannelPostRefusedPatchesNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	in := h.addInstances("db", "cassandra", 1)[0]
	id, _, ack := h.plan(alice, in.Name)
	h.slack.FailMethod("chat.postMessage", "not_in_channel", 1)
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 0)
	h.reply(ack.ResponseURL, "not_in_channel")
	h.assertBatchCalls(0, "nothing is patched without the channel message")
	if ev := h.auditEvents("not_submitted"); len(ev) != 1 {
		t.Errorf("not_submitted audit events = %d, want 1", len(ev))
	}
}

// SIGTERM during a submission of several batches: the call in flight
// finishes and is recorded; the batches not yet sent are not sent, and the
// thread says so.
func TestShutdownBetweenBatches(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *config.Config) { c.FleetGuard = 1000 }) // one wave of two batch calls
	insts := h.addInstances("db", "cassandra", 12)                     // two batch calls: 10 + 2
	names := make([]string, len(insts))
	for i, in := range insts {
		names[i] = in.Name
	}
	h.gdb.SetDelay("/instances/db-upgrade", time.Second)
	id, _, ack := h.plan(alice, strings.Join(names, " "))
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 0)
	if err := h.slack.WaitFor(h.ctx(), "first batch call in flight", func(*slacktest.Server) bool {
		return h.gdb.Calls("/instances/db-upgrade") == 1
	}); err != nil {
		t.Fatal(err)
	}
	h.stop()
	if n := len(h.gdb.BatchCalls()); n != 1 {
		t.Fatalf("%d batch calls completed, want the one in flight only", n)
	}
	ts := h.parent(id).TS
	thread := h.threadText(ts, "10 submitted, 2 not submitted", "NOT_SENT")
	for _, in := range insts[10:] {
		if !strings.Contains(thread, in.ID) {
			t.Errorf("thread does not name %s, which was not sent:\n%s", in.ID, thread)
		}
	}
}
