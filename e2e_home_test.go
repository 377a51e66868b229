package main

import (
	"strings"
	"testing"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/slacktest"
)

// openHome opens user's Home tab and waits for its publish number n.
func (h *harness) openHome(user string, n int) string {
	h.t.Helper()
	if _, err := h.slack.AppHomeOpened(h.ctx(), user, "home"); err != nil {
		h.t.Fatalf("app_home_opened: %v", err)
	}
	var v slacktest.HomeView
	if err := h.slack.WaitFor(h.ctx(), "the Home tab of "+user, func(s *slacktest.Server) bool {
		var ok bool
		v, ok = s.HomeView(user)
		return ok && v.Publishes >= n
	}); err != nil {
		h.t.Fatalf("%v\nlogs:\n%s", err, h.logs.String())
	}
	return v.AllText()
}

// Opening the App Home publishes a fresh Home tab: your open plans, the
// requests running now and the last finished, each with its state, counts
// and thread link; someone not allowed sees only why.
func TestAppHome(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	insts := h.addInstances("db", "cassandra", 2)

	empty := h.openHome(alice, 1)
	for _, want := range []string{"GeminiDB patches", "*Your open plans*", "_None._", "_Nothing is being patched._", "_Nothing yet._"} {
		if !strings.Contains(empty, want) {
			t.Errorf("empty Home lacks %q:\n%s", want, empty)
		}
	}

	running, ts, jobs := h.submitted(insts[:1])
	open, _, _ := h.plan(alice, insts[1].Name)
	home := h.openHome(alice, 2)
	yours, now, _ := cut3(home, "*Running now*", "*Recently finished*")
	if !strings.Contains(yours, open) || !strings.Contains(yours, "*waiting for confirmation*") || strings.Contains(yours, running) {
		t.Errorf("Your open plans: got\n%s\nwant %s only", yours, open)
	}
	link := slacktest.Permalink(opsChannel, &slacktest.Message{TS: ts})
	if !strings.Contains(now, running) || !strings.Contains(now, "*running*") || !strings.Contains(now, "1 running") || !strings.Contains(now, "<"+link+"|thread>") {
		t.Errorf("Running now: got\n%s\nwant %s running, with its thread link", now, running)
	}
	// Bob sees the running request, but not Alice's open plan.
	if bobs := h.openHome(bob, 1); strings.Contains(bobs, open) || !strings.Contains(bobs, running) {
		t.Errorf("Bob's Home: got\n%s\nwant %s running and not Alice's plan %s", bobs, running, open)
	}

	h.gdb.CompleteJob(jobs[insts[0].ID], "3.11.3.5")
	h.threadText(ts, "finished:")
	h.waitParentText(running, "has finished") // the request is done
	_, now, finished := cut3(h.openHome(alice, 3), "*Running now*", "*Recently finished*")
	if strings.Contains(now, running) || !strings.Contains(finished, running) || !strings.Contains(finished, "*done*") || !strings.Contains(finished, "1 completed") {
		t.Errorf("after the patch: Running now\n%s\nRecently finished\n%s\nwant %s done", now, finished, running)
	}

	// The Messages tab publishes nothing; someone not allowed sees why.
	if _, err := h.slack.AppHomeOpened(h.ctx(), alice, "messages"); err != nil {
		t.Fatal(err)
	}
	if refused := h.openHome(carol, 1); !strings.Contains(refused, "You are not allowed") || strings.Contains(refused, running) {
		t.Errorf("Carol's Home: got\n%s\nwant only that she is not allowed", refused)
	}
	h.quiesce()
	if v, _ := h.slack.HomeView(alice); v.Publishes != 3 {
		t.Errorf("Alice's Home published %d times, want 3 (the Messages tab publishes nothing)", v.Publishes)
	}
	for _, c := range h.slack.CallsTo("views.publish") {
		if c.Error != "" {
			t.Errorf("views.publish failed: %s", c.Error)
		}
	}
}

// cut3 splits s at a and then b.
func cut3(s, a, b string) (string, string, string) {
	first, rest, _ := strings.Cut(s, a)
	second, third, _ := strings.Cut(rest, b)
	return first, second, third
}
