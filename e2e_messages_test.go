package main

import (
	"fmt"
	"strings"
	"testing"
)

// The plan's deadline, in a real message through the fakes, is a Slack
// date: every reader sees their own time, clients that cannot the UTC
// fallback.
func TestPlanDeadlineIsASlackDate(t *testing.T) {
	h := newHarness(t, nil)
	insts := h.addInstances("db", "cassandra", 1)
	id, plan, _ := h.plan(alice, insts[0].Name)
	r, err := h.main.Store.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("This plan can be confirmed until <!date^%d^{date_short_pretty} {time}|%s>.",
		r.ExpiresAt.Unix(), r.ExpiresAt.UTC().Format("2006-01-02 15:04 UTC"))
	if !strings.Contains(plan.AllText(), want) {
		t.Errorf("plan lacks %q:\n%s", want, plan.AllText())
	}
}
