package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/demo"
)

// docs/messages.md (linked from the README) shows every message the bot
// sends as a user sees it, rendered from the golden files of bot/testdata
// (the bot's Block Kit, checked by its tests): between these markers.
const (
	messagesStart = "<!-- messages: rendered from bot/testdata by go test -run TestReadmeMessages -update-demo . -->"
	messagesEnd   = "<!-- end of messages -->"
)

// readmeMessages are the golden files shown, in the order a request lives.
var readmeMessages = []struct{ title, file string }{
	{"The plan, only the requester sees it (`/geminidb-patch cass-prod-1 cass-prod-2 ghost --force`)", "plan_seed"},
	{"Instances outside their maintenance window are left out without `--force`", "plan_outside_window"},
	{"With `BOT_APPROVERS`: the approval request in the channel", "approval"},
	{"The channel message while patching", "parent_running"},
	{"The thread: batch results, with a hint for documented error codes", "thread_results"},
	{"The thread: a job fails", "thread_job_failed"},
	{"The thread: a job the bot stopped following", "thread_job_unfollowed"},
	{"The thread: jobs that ended in the same poll, in one reply", "thread_job_ends"},
	{"The thread: the final summary", "thread_summary_mixed"},
	{"The channel message once finished", "parent_finished"},
	{"`/geminidb-patch status r-…`", "status_request"},
	{"`/geminidb-patch list`", "list"},
	{"`/geminidb-patch history`", "history"},
	{"The App Home tab", "home"},
}

// readmeNames are the people and channels of the golden files.
func readmeNames(id string) string {
	switch id {
	case "UALICE":
		return "alice"
	case "UBEN":
		return "ben"
	case "COPS":
		return "db-ops"
	}
	return id
}

// renderMessages renders readmeMessages as the section of docs/messages.md.
func renderMessages(t *testing.T) string {
	var b strings.Builder
	b.WriteString(messagesStart + "\n")
	for _, m := range readmeMessages {
		raw, err := os.ReadFile(filepath.Join("bot", "testdata", m.file+".json"))
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString("\n" + m.title + ":\n\n```text\n")
		for _, line := range demo.Render("", raw, readmeNames) {
			b.WriteString(strings.TrimRight(line, " ") + "\n")
		}
		b.WriteString("```\n")
	}
	b.WriteString("\n" + messagesEnd)
	return b.String()
}

func TestReadmeMessages(t *testing.T) {
	raw, err := os.ReadFile(messagesDoc)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	from, to := strings.Index(readme, messagesStart), strings.Index(readme, messagesEnd)
	if from < 0 || to < from {
		t.Fatalf("%s lacks the markers %q … %q", messagesDoc, messagesStart, messagesEnd)
	}
	got := renderMessages(t)
	current := readme[from : to+len(messagesEnd)]
	if *updateDemo {
		if err := os.WriteFile(messagesDoc, []byte(readme[:from]+got+readme[to+len(messagesEnd):]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if current != got {
		t.Errorf("the messages of %s differ from bot/testdata (go test -run TestReadmeMessages -update-demo . rewrites them):\n%s", messagesDoc, got)
	}
}
