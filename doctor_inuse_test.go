package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
)

// doctor run beside the bot (docker exec, kubectl exec into the bbolt
// deployment) finds the store file locked by the bot: it says so and why,
// and does not fail for it.
func TestDoctorStoreInUse(t *testing.T) {
	_, _, cfg := fakeConfig(t)
	bot, err := store.Open(cfg.Store) // the running bot holds the file
	if err != nil {
		t.Fatal(err)
	}
	defer bot.Close()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"doctor"}, withConfig(cfg), &stdout, &stderr)
	out := stdout.String()
	if code != exitOK {
		t.Errorf("got exit status %d, want %d\n%s%s", code, exitOK, out, stderr.String())
	}
	var line string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "store") && (strings.HasPrefix(l, "PASS") || strings.HasPrefix(l, "FAIL")) {
			line = l
		}
	}
	for _, want := range []string{"PASS", cfg.Store, "in use by another process, normally the running bot", "/readyz"} {
		if !strings.Contains(line, want) {
			t.Errorf("store line %q, want it to contain %q\n%s", line, want, out)
		}
	}
	// The bot's file is as it was: still held, still usable.
	if _, err := bot.List(context.Background()); err != nil {
		t.Errorf("the bot's store after doctor: %v", err)
	}
}
