package main

import (
	"strings"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/config"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/slacktest"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// A batch call that timed out may have started the patch: the channel
// counts it as unknown (never "not submitted"), the thread and the final
// summary say it may have started and to check the console, and the
// operator is never told that nothing started.
func TestTimedOutBatchIsUnknownNotNotSubmitted(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *config.Config) {
		c.ShutdownTimeout = time.Second // batch calls time out after 750ms
	})
	insts := h.addInstances("db", "cassandra", 2)
	h.gdb.SetDelay("/instances/db-upgrade", 3*time.Second)
	id, _, ack := h.plan(alice, insts[0].Name+" "+insts[1].Name)
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 0)
	ts := h.parent(id).TS
	thread := h.threadText(ts, "Batch results", "outcome unknown", "finished", "may have started: check the console before retrying")
	for _, bad := range []string{"no patch job was started", "No patch job was started", "nothing to follow"} {
		if strings.Contains(thread, bad) {
			t.Errorf("the thread says %q about a batch that may have started:\n%s", bad, thread)
		}
	}
	h.waitParentText(id, "not submitted 0 · unknown 2")
	h.reply(ack.ResponseURL, "outcome is unknown")
	for _, in := range insts {
		if !strings.Contains(thread, in.ID) {
			t.Errorf("the thread does not name %s, whose outcome is unknown:\n%s", in.Name, thread)
		}
	}
}

// When Slack refuses the thread reply with the batch answers, it is tried
// again on a later tick until posted, and no job's end is reported before
// its job ID.
func TestBatchResultsAreRetriedUntilPosted(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	insts := h.addInstances("db", "cassandra", 1)
	// Hold the batch call until the parent message is out, then refuse the
	// next post (the batch answers) once.
	h.gdb.SetDelay("/instances/db-upgrade", 300*time.Millisecond)
	id, _, ack := h.plan(alice, insts[0].Name)
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 0)
	ts := h.parent(id).TS
	h.slack.FailMethod("chat.postMessage", "internal_error", 1)
	thread := h.threadText(ts, "Batch results")
	if _, err := h.slack.WaitCall(h.ctx(), "chat.postMessage", func(c slacktest.Call) bool {
		return c.Error == "internal_error"
	}); err != nil {
		t.Fatalf("the first post of the batch answers was not refused: %v", err)
	}
	job := h.gdb.JobsFor(insts[0].ID)
	if len(job) != 1 || !strings.Contains(thread, job[0]) {
		t.Fatalf("the batch answers do not name the job %v:\n%s", job, thread)
	}
	h.gdb.CompleteJob(job[0], "3.11.3.5")
	h.threadText(ts, job[0]+"` Completed", "finished")
	msgs := h.slack.Thread(opsChannel, ts)
	if len(msgs) == 0 || !strings.Contains(msgs[0].AllText(), "Batch results") {
		t.Errorf("the first thread reply is not the batch answers: %v", msgs)
	}
	if n := h.count(ts, "Batch results"); n != 1 {
		t.Errorf("batch answers posted %d times, want once", n)
	}
}

// A requester removed from BOT_ALLOWED_USERS cannot confirm a plan shown
// while they were allowed, and a click from another channel does nothing.
func TestClickRechecksTodaysRights(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	insts := h.addInstances("db", "cassandra", 1)
	id, _, ack := h.plan(alice, insts[0].Name)

	if _, err := h.slack.BlockAction(h.ctx(), slacktest.BlockAction{
		UserID: alice, ChannelID: "COTHER", ActionID: "patch_confirm", Value: id, ResponseURL: ack.ResponseURL, Ephemeral: true,
	}, 0); err != nil {
		t.Fatal(err)
	}
	h.ephemeralTo(alice, "its buttons work only there")

	h.cfg.AllowedUsers = []string{bob}
	h.restart()
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 0)
	h.ephemeralTo(alice, "not allowed to use /geminidb-patch")
	h.assertBatchCalls(0, "a requester no longer allowed confirmed")
	if got := len(h.auditEvents("refused")); got < 2 {
		t.Errorf("got %d refused audit events, want 2", got)
	}
}

// A response_url is a credential: a failed post to one never logs it.
func TestResponseURLNeverLogged(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	insts := h.addInstances("db", "cassandra", 1)
	id, _, _ := h.plan(alice, insts[0].Name)
	hook := "http://127.0.0.1:1/hooks/T000/B000/secret-response-token"
	h.click(alice, "patch_cancel", id, hook, 0)
	h.quiesce() // the click was handled: its failed post is logged
	if !strings.Contains(h.logs.String(), "could not update the plan message") {
		t.Fatalf("the failed post to the response_url was not logged:\n%s", h.logs.String())
	}
	if strings.Contains(h.logs.String(), "secret-response-token") {
		t.Errorf("the logs contain a response_url:\n%s", h.logs.String())
	}
}

// An instance patched by hand between the plan and the click (a newer
// whole version, a patch still offered) is drift: nothing is sent and a
// fresh plan is offered.
func TestHandMadePatchIsDrift(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	in := h.addInstances("db", "cassandra", 1)[0]
	id, _, ack := h.plan(alice, in.Name)
	h.gdb.SetInstance(in.ID, func(i *upgrade.Instance) { i.WholeVersion = "3.11.3.5" })
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 0)
	c := h.reply(ack.ResponseURL, "instances changed since it was shown")
	if !strings.Contains(c.AllText(), "3.11.3.5") {
		t.Errorf("the drift note does not say what changed:\n%s", c.AllText())
	}
	h.assertBatchCalls(0, "an instance patched by hand since the plan")
}
