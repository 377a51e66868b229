package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/slacktest"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
)

// history lists the channel's last requests, newest first, ephemerally,
// each with a link to its thread (chat.getPermalink); by a person or
// naming an instance when asked; never another channel's.
func TestHistory(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	insts := h.addInstances("db", "cassandra", 3)

	// Alice patches db-1 (a thread), Bob plans db-2 (no thread yet), and
	// Alice plans db-3 in another channel.
	patched, ts, jobs := h.submitted(insts[:1])
	h.gdb.CompleteJob(jobs[insts[0].ID], "3.11.3.5")
	h.threadText(ts, "finished:")
	h.waitParentText(patched, "has finished") // the request is done
	bobs, _, _ := h.plan(bob, insts[1].Name)
	other := h.slash(alice, "COTHER", insts[2].Name)
	h.reply(other.ResponseURL, "patch plan")

	history := func(user, args string) string {
		t.Helper()
		ack := h.slash(user, opsChannel, strings.TrimSpace("history "+args))
		c := h.reply(ack.ResponseURL, "History:")
		if c.ResponseType != "ephemeral" {
			t.Errorf("history %s: response_type %q, want ephemeral", args, c.ResponseType)
		}
		return c.AllText()
	}

	all := history(alice, "")
	if !strings.Contains(all, patched) || !strings.Contains(all, bobs) || strings.Index(all, bobs) > strings.Index(all, patched) {
		t.Errorf("history lacks a request of the channel or is not newest first:\n%s", all)
	}
	if strings.Contains(all, insts[2].Name) {
		t.Errorf("history shows another channel's request:\n%s", all)
	}
	link := slacktest.Permalink(opsChannel, &slacktest.Message{TS: ts})
	if !strings.Contains(all, "<"+link+"|thread>") {
		t.Errorf("history lacks the thread link %s:\n%s", link, all)
	}
	if len(h.slack.CallsTo("chat.getPermalink")) == 0 {
		t.Error("history did not ask Slack for the permalink")
	}
	for _, want := range []string{"*done*", "1 completed", "*waiting for confirmation*", "<@" + bob + ">", "(1 Cassandra)"} {
		if !strings.Contains(all, want) {
			t.Errorf("history lacks %q:\n%s", want, all)
		}
	}

	byBob := history(alice, "<@"+bob+"|bob>")
	if !strings.Contains(byBob, bobs) || strings.Contains(byBob, patched) {
		t.Errorf("history of Bob: got\n%s\nwant only %s", byBob, bobs)
	}
	byInstance := history(bob, insts[0].ID)
	if !strings.Contains(byInstance, patched) || strings.Contains(byInstance, bobs) {
		t.Errorf("history of %s: got\n%s\nwant only %s", insts[0].Name, byInstance, patched)
	}
	if got := history(alice, "ghost-db"); !strings.Contains(got, "No patch requests naming `ghost-db` in this channel.") {
		t.Errorf("history of an instance never patched: got\n%s", got)
	}
}

// history shows the last 20 requests, newest first.
func TestHistoryShowsTheLastTwenty(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	base := time.Now().Add(-48 * time.Hour)
	for i := range 25 {
		r := store.Request{ID: fmt.Sprintf("r-old%07d", i), State: store.Expired, Requester: alice, Channel: opsChannel,
			Plan: []byte(`{"targets":[]}`), CreatedAt: base.Add(time.Duration(i) * time.Minute)}
		if err := h.main.Store.Create(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	ack := h.slash(alice, opsChannel, "history")
	got := h.reply(ack.ResponseURL, "History:").AllText()
	if n := strings.Count(got, "`r-old"); n != 20 {
		t.Errorf("history shows %d requests, want 20:\n%s", n, got)
	}
	if !strings.Contains(got, "r-old0000024") || strings.Contains(got, "r-old0000004`") || strings.Index(got, "r-old0000024") > strings.Index(got, "r-old0000023") {
		t.Errorf("history is not the newest 20, newest first:\n%s", got)
	}
}
