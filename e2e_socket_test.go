package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/slacktest"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade/upgradetest"
)

// Slack disabling the Socket Mode link (an admin turned Socket Mode off)
// stops the bot with exit code 1 and a log line that says what to do,
// instead of redialling forever.
func TestLinkDisabledStopsTheBot(t *testing.T) {
	t.Parallel()
	sl := slacktest.New(t)
	gdb := upgradetest.NewServer(t, upgradetest.WithToken(testGeminiToken))
	cfg := botConfig(t, sl, gdb)
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	code := make(chan int, 1)
	go func() { code <- run(ctx, nil, withConfig(cfg), logs, logs) }()
	if err := sl.WaitFor(ctx, "the bot's connection", func(s *slacktest.Server) bool { return s.OpenConnections() == 1 }); err != nil {
		t.Fatalf("%v\nlogs:\n%s", err, logs)
	}

	sl.DisableLink()
	select {
	case got := <-code:
		if got != exitFailed {
			t.Errorf("exit code: got %d, want %d", got, exitFailed)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("the bot did not stop after link_disabled\nlogs:\n%s", logs)
	}
	out := logs.String()
	for _, want := range []string{"link_disabled", "Socket Mode was turned off", "api.slack.com/apps"} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %q:\n%s", want, out)
		}
	}
	if got := sl.Connections(); got != 1 {
		t.Errorf("connections: got %d, want 1 (no redial after link_disabled)", got)
	}
}
