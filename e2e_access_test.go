package main

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/config"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/slacktest"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// Someone not in BOT_ALLOWED_USERS is refused with the reason, and nothing
// is looked up in the cloud for them.
func TestRefusedUser(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	in := h.addInstances("db", "cassandra", 1)[0]
	ack := h.slash(carol, opsChannel, in.Name)
	if got := ackText(ack); !strings.Contains(got, "not allowed") || !strings.Contains(got, "BOT_ALLOWED_USERS") {
		t.Errorf("ack = %q, want a refusal that names BOT_ALLOWED_USERS", got)
	}
	for _, text := range []string{"list", "status r-123"} {
		if got := ackText(h.slash(carol, opsChannel, text)); !strings.Contains(got, "not allowed") {
			t.Errorf("%q: ack = %q, want a refusal", text, got)
		}
	}
	h.quiesce()
	if n := h.cloudCalls(); n != 0 {
		t.Errorf("GeminiDB called %d times for a refused user, want 0", n)
	}
	if ev := h.auditEvents("refused"); len(ev) != 3 || ev[0]["user"] != carol {
		t.Errorf("refused audit events = %v, want 3 for %s", ev, carol)
	}
}

// Outside BOT_ALLOWED_CHANNELS the command is refused.
func TestRefusedChannel(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *config.Config) { c.AllowedChannels = []string{opsChannel} })
	in := h.addInstances("db", "cassandra", 1)[0]
	ack := h.slash(alice, "CRANDOM", in.Name)
	if got := ackText(ack); !strings.Contains(got, "does not work in this channel") {
		t.Errorf("ack = %q, want a channel refusal", got)
	}
	h.quiesce()
	if n := h.cloudCalls(); n != 0 {
		t.Errorf("GeminiDB called %d times from a refused channel, want 0", n)
	}
	h.plan(alice, in.Name) // the allowed channel works
}

// A member of an allowed user group may patch; others are refused after
// the membership lookup, and once the members are cached, already in the
// ack, before taking a place in the work queue.
func TestUserGroupMemberAllowed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *config.Config) { c.AllowedUsers = []string{"SDBOPS"} },
		slacktest.WithUserGroup("SDBOPS", carol))
	in := h.addInstances("db", "cassandra", 1)[0]
	if id, _, _ := h.plan(carol, in.Name); id == "" {
		t.Error("group member got no confirmable plan")
	}
	ack := h.slash(alice, opsChannel, in.Name)
	if got := ackText(ack); !strings.Contains(got, "not allowed") {
		t.Errorf("ack = %q, want a refusal", got)
	}
	if n := len(h.slack.CallsTo("usergroups.users.list")); n != 1 {
		t.Errorf("usergroups.users.list called %d times, want 1 (cached)", n)
	}
}

// approvalMessage waits for the channel message asking to approve id.
func (h *harness) approvalMessage(id string) slacktest.Message {
	h.t.Helper()
	var found slacktest.Message
	if err := h.slack.WaitFor(h.ctx(), "approval message for "+id, func(s *slacktest.Server) bool {
		for _, m := range s.Messages(opsChannel) {
			if strings.Contains(m.AllText(), id) && buttonValue(m.Blocks, "patch_approve") == id {
				found = m
				return true
			}
		}
		return false
	}); err != nil {
		h.t.Fatalf("%v\nlogs:\n%s", err, h.logs.String())
	}
	return found
}

func (h *harness) approvalClick(user, action, id string, retry int) {
	h.t.Helper()
	if _, err := h.slack.BlockAction(h.ctx(), slacktest.BlockAction{UserID: user, ChannelID: opsChannel, ActionID: action, Value: id}, retry); err != nil {
		h.t.Fatalf("click %s: %v", action, err)
	}
}

// Two-person rule: the requester cannot approve, a stranger cannot approve,
// an approver approves once; approve clicked twice → one batch call.
func TestApprovalFlow(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *config.Config) { c.Approvers = []string{bob} })
	insts := h.addInstances("db", "cassandra", 2)
	id, planMsg, ack := h.plan(alice, insts[0].Name+" "+insts[1].Name)
	if !strings.Contains(planMsg.AllText(), "Request approval") {
		t.Errorf("plan's button should request approval:\n%s", planMsg.AllText())
	}
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 0)
	h.reply(ack.ResponseURL, "waiting for approval")
	msg := h.approvalMessage(id)
	for _, want := range []string{"<@" + alice + ">", insts[0].Name, insts[1].Name, "<@" + bob + ">"} {
		if !strings.Contains(msg.AllText(), want) {
			t.Errorf("approval message lacks %q:\n%s", want, msg.AllText())
		}
	}
	if buttonValue(msg.Blocks, "patch_reject") != id {
		t.Error("approval message has no Reject button")
	}

	h.approvalClick(alice, "patch_approve", id, 0)
	h.ephemeralTo(alice, "cannot approve or reject your own request")
	h.approvalClick(carol, "patch_approve", id, 0)
	h.ephemeralTo(carol, "Only an approver")
	h.assertBatchCalls(0, "before approval")

	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() { h.approvalClick(bob, "patch_approve", id, min(i, 1)) })
	}
	wg.Wait()
	parent := h.parent(id)
	h.threadText(parent.TS, "2 submitted")
	h.waitParentText(id, "Approved by <@"+bob+">")
	h.assertBatchCalls(1, "one submission however often it is clicked")
	if ev := h.auditEvents("approved"); len(ev) != 1 || ev[0]["user"] != bob {
		t.Errorf("approved audit events = %v, want one by %s", ev, bob)
	}
}

// Approvers may be a user group; its members approve, the requester still cannot.
func TestApproverGroup(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *config.Config) { c.Approvers = []string{"SLEADS"} },
		slacktest.WithUserGroup("SLEADS", alice, carol))
	in := h.addInstances("db", "cassandra", 1)[0]
	id, _, ack := h.plan(alice, in.Name)
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 0)
	h.approvalMessage(id)
	h.approvalClick(alice, "patch_approve", id, 0)
	h.ephemeralTo(alice, "cannot approve")
	h.approvalClick(carol, "patch_approve", id, 0)
	h.threadText(h.parent(id).TS, "1 submitted")
}

// Reject: nothing is patched and the requester is told who rejected.
func TestReject(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *config.Config) { c.Approvers = []string{bob} })
	in := h.addInstances("db", "cassandra", 1)[0]
	id, _, ack := h.plan(alice, in.Name)
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 0)
	h.approvalMessage(id)
	h.approvalClick(bob, "patch_reject", id, 0)
	h.ephemeralTo(alice, "rejected by <@"+bob+">")
	h.approvalClick(bob, "patch_approve", id, 0)
	h.ephemeralTo(bob, "was rejected")
	h.assertBatchCalls(0, "after reject")
	if len(h.auditEvents("rejected")) != 1 {
		t.Error("want one rejected audit event")
	}
}

// A plan past BOT_CONFIRM_TTL cannot be confirmed; the message shows it expired.
func TestExpiredPlan(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	in := h.addInstances("db", "cassandra", 1)[0]
	id, _, ack := h.plan(alice, in.Name)
	h.clock.Advance(15*time.Minute + time.Second) // BOT_CONFIRM_TTL's default
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 0)
	h.reply(ack.ResponseURL, "expired")
	h.restart()
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 0)
	h.ephemeralTo(alice, "expired")
	h.assertBatchCalls(0, "for an expired plan")
	if len(h.auditEvents("expired")) != 1 {
		t.Errorf("expired audit events = %d, want 1", len(h.auditEvents("expired")))
	}
}

// An expired approval request cannot be approved.
func TestExpiredApproval(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *config.Config) {
		c.ConfirmTTL = 10 * time.Minute
		c.Approvers = []string{bob}
	})
	in := h.addInstances("db", "cassandra", 1)[0]
	id, _, ack := h.plan(alice, in.Name)
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 0)
	h.approvalMessage(id)
	h.clock.Advance(10*time.Minute + time.Second)
	h.approvalClick(bob, "patch_approve", id, 0)
	h.ephemeralTo(bob, "expired")
	h.assertBatchCalls(0, "for an expired approval")
}

// What is approved is what is submitted: if an instance changed after the
// plan was shown, the bot refuses and offers a fresh plan.
func TestDriftOffersAFreshPlan(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	insts := h.addInstances("db", "cassandra", 2)
	id, _, ack := h.plan(alice, insts[0].Name+" "+insts[1].Name)
	h.gdb.SetInstance(insts[1].ID, func(in *upgrade.Instance) { in.Version = "3.12"; in.WholeVersion = "3.12.0.1" })
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 0)
	fresh := h.reply(ack.ResponseURL, "changed since")
	newID := buttonValue(fresh.Blocks, "patch_confirm")
	if newID == "" || newID == id {
		t.Fatalf("fresh plan's request ID = %q, want a new confirmable plan (old %s)", newID, id)
	}
	h.assertBatchCalls(0, "for a drifted plan")
	h.click(alice, "patch_confirm", newID, ack.ResponseURL, 0)
	h.threadText(h.parent(newID).TS, "2 submitted")
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 0)
	h.assertBatchCalls(1, "the old plan stays dead")
}

// A person cannot flood the bot: commands per minute and open plans are limited.
func TestRateLimits(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *config.Config) {
		c.CommandsPerMin = 4
		c.MaxOpenPlans = 2
	})
	in := h.addInstances("db", "cassandra", 1)[0]
	h.plan(alice, in.Name)
	h.plan(alice, in.Name)
	ack := h.slash(alice, opsChannel, in.Name)
	h.reply(ack.ResponseURL, "already have 2 plans")
	h.reply(h.slash(alice, opsChannel, "list").ResponseURL, "patch available") // the 4th command this minute is still fine
	ack = h.slash(alice, opsChannel, in.Name)
	h.reply(ack.ResponseURL, "at most 4 commands per minute")
	// Another person is not affected.
	if id, _, _ := h.plan(bob, in.Name); id == "" {
		t.Error("bob's plan was refused by alice's limits")
	}
}

// An unanswered plan's message is replaced when it expires, without a click,
// and so is an unanswered approval request.
func TestStalePlansExpireOnTheirOwn(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *config.Config) { c.Approvers = []string{bob} })
	in := h.addInstances("db", "cassandra", 1)[0]
	_, _, ack := h.plan(alice, in.Name)
	id, _, ack2 := h.plan(alice, in.Name)
	h.click(alice, "patch_confirm", id, ack2.ResponseURL, 0)
	msg := h.approvalMessage(id)
	h.clock.Advance(15*time.Minute + time.Second) // BOT_CONFIRM_TTL's default
	h.reply(ack.ResponseURL, "expired")
	if err := h.slack.WaitFor(h.ctx(), "approval message marked expired", func(s *slacktest.Server) bool {
		for _, m := range s.Messages(opsChannel) {
			if m.TS == msg.TS {
				return strings.Contains(m.AllText(), "expired") && buttonValue(m.Blocks, "patch_approve") == ""
			}
		}
		return false
	}); err != nil {
		t.Fatal(err)
	}
	if n := len(h.auditEvents("expired")); n != 2 {
		t.Errorf("expired audit events = %d, want 2", n)
	}
}

// When the approval request cannot be posted, nothing changes: the plan can
// be confirmed again once the bot can post.
func TestApprovalPostRefused(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *config.Config) { c.Approvers = []string{bob} })
	in := h.addInstances("db", "cassandra", 1)[0]
	id, _, ack := h.plan(alice, in.Name)
	h.slack.FailMethod("chat.postMessage", "not_in_channel", 1)
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 0)
	h.reply(ack.ResponseURL, "could not post the approval request")
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 0)
	h.approvalMessage(id)
	h.assertBatchCalls(0, "nothing is patched before approval")
}
