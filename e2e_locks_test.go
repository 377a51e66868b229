package main

import (
	"strings"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/config"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// Two people each schedule instance X with --wait-for-window; when the
// window opens, one tick claims both waves: exactly one batch call names
// X, and the other request says who is patching it (issue 19).
func TestTwoRequestsScheduleTheSameInstance(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *config.Config) { c.AllowedUsers = []string{alice, bob} })
	insts := h.addInstances("db", "cassandra", 1)
	x := insts[0]
	h.gdb.SetInstance(x.ID, func(in *upgrade.Instance) { in.MaintenanceWindow = window(2, 2) })
	idA, tsA := h.confirmed(x.Name + " --wait-for-window")
	idB, planB, ackB := h.plan(bob, x.Name+" --wait-for-window")
	if idB == "" {
		t.Fatalf("bob's plan has no Confirm button:\n%s", planB.AllText())
	}
	h.click(bob, "patch_confirm", idB, ackB.ResponseURL, 0)
	tsB := h.parent(idB).TS
	h.waitParentText(idA, "scheduled for")
	h.waitParentText(idB, "scheduled for")
	h.assertBatchCalls(0, "every window is closed")
	h.clock.Advance(2 * time.Hour)
	h.waitBatchCalls(1)
	h.quiesce()
	var withX int
	for _, call := range h.gdb.BatchCalls() {
		for _, id := range call {
			if id == x.ID {
				withX++
			}
		}
	}
	if withX != 1 {
		t.Fatalf("%d batch calls named %s, want exactly 1: %v", withX, x.Name, h.gdb.BatchCalls())
	}
	// Whichever won, the other's thread names the winner and its requester.
	textA := strings.Join(h.threadTexts(tsA), "\n")
	textB := strings.Join(h.threadTexts(tsB), "\n")
	switch {
	case strings.Contains(textA, "being patched by "+idB+" of @"+bob):
	case strings.Contains(textB, "being patched by "+idA+" of @"+alice):
	default:
		t.Errorf("neither thread says who patches %s:\nA:\n%s\nB:\n%s", x.Name, textA, textB)
	}
	// While its job runs, a new plan skips X and status names the holder.
	if _, plan, _ := h.plan(alice, x.Name+" --dry-run"); !strings.Contains(plan.AllText(), "being patched by r-") {
		t.Errorf("a plan of a locked instance does not say who patches it:\n%s", plan.AllText())
	}
	ack := h.slash(alice, opsChannel, "status "+x.Name)
	if c := h.reply(ack.ResponseURL, "being patched by"); !strings.Contains(c.AllText(), "r-") {
		t.Errorf("status of a locked instance: %s", c.AllText())
	}
}

// threadTexts returns the texts of the thread under ts in the ops channel.
func (h *harness) threadTexts(ts string) []string {
	var out []string
	for _, m := range h.slack.Thread(opsChannel, ts) {
		out = append(out, m.AllText())
	}
	return out
}
