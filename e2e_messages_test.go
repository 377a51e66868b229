package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/config"
)

// The plan's deadline, in a real message through the fakes, is a Slack
// date: every reader sees their own time, clients that cannot the UTC
// fallback.
func TestPlanDeadlineIsASlackDate(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	insts := h.addInstances("db", "cassandra", 1)
	id, plan, _ := h.plan(alice, insts[0].Name)
	r, err := h.main.Store.Get(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("This plan can be confirmed until <!date^%d^{date_short_pretty} {time}|%s>.",
		r.ExpiresAt.Unix(), r.ExpiresAt.UTC().Format("2006-01-02 15:04 UTC"))
	if !strings.Contains(plan.AllText(), want) {
		t.Errorf("plan lacks %q:\n%s", want, plan.AllText())
	}
}

// With BOT_CONSOLE_URL set, instance names link to their console page in
// the plan, list and status answers.
func TestConsoleLinks(t *testing.T) {
	t.Parallel()
	const tmpl = "https://console.example.com/nosql/?region={region}&project={project_id}#/instances/{instance_id}"
	h := newHarness(t, func(c *config.Config) {
		c.ConsoleURL = tmpl
		c.GeminiDBRegion = "eu-de"
	})
	insts := h.addInstances("db", "cassandra", 2)
	link := func(name, id string) string {
		return "<https://console.example.com/nosql/?region=eu-de&amp;project=" + h.gdb.ProjectID + "#/instances/" + id + "|" + name + ">"
	}
	id, plan, ack := h.plan(alice, insts[0].Name+" "+insts[1].Name)
	for _, in := range insts {
		if !strings.Contains(plan.AllText(), link(in.Name, in.ID)) {
			t.Errorf("plan lacks the console link of %s:\n%s", in.Name, plan.AllText())
		}
	}
	ack2 := h.slash(alice, opsChannel, "list")
	if c := h.reply(ack2.ResponseURL, "with a patch available"); !strings.Contains(c.AllText(), link(insts[1].Name, insts[1].ID)) {
		t.Errorf("list lacks the console link of %s:\n%s", insts[1].Name, c.AllText())
	}
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 0)
	h.threadText(h.parent(id).TS, "Batch results")
	ack3 := h.slash(alice, opsChannel, "status "+id)
	if c := h.reply(ack3.ResponseURL, "*Request*"); !strings.Contains(c.AllText(), link(insts[0].Name, insts[0].ID)) {
		t.Errorf("status lacks the console link of %s:\n%s", insts[0].Name, c.AllText())
	}
}
