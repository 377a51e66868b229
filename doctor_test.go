package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/slacktest"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store/storetest"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade/upgradetest"
)

// The doctor's checks, in the order it prints them.
var doctorChecks = []string{"configuration", "slack auth.test", "slack socket mode", "geminidb", "store"}

// fakeEnv starts a fake Slack and a fake GeminiDB API and returns the
// environment that points the bot at them.
func fakeEnv(t *testing.T) (*slacktest.Server, *upgradetest.Server, map[string]string) {
	t.Helper()
	sl := slacktest.New(t)
	gdb := upgradetest.NewServer(t, upgradetest.WithToken(testGeminiToken))
	return sl, gdb, botEnv(t, sl, gdb)
}

// doctorLines parses the doctor's output into check name → "PASS"/"FAIL".
func doctorLines(out string) map[string]string {
	got := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		verdict, rest, ok := strings.Cut(line, "  ")
		if !ok || (verdict != "PASS" && verdict != "FAIL") {
			continue
		}
		rest = strings.TrimSpace(rest)
		for _, name := range doctorChecks {
			if strings.HasPrefix(rest, name) {
				got[name] = verdict
			}
		}
	}
	return got
}

func TestDoctor(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(t *testing.T, sl *slacktest.Server, gdb *upgradetest.Server, env map[string]string)
		failing  string // the one check that must fail; "" = all pass
		wantText string // in the failing line
	}{
		{name: "all pass, no store yet"},
		{name: "all pass, existing store", setup: func(t *testing.T, _ *slacktest.Server, _ *upgradetest.Server, env map[string]string) {
			st, err := store.Open(env["BOT_STORE"])
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "bad bot token", failing: "slack auth.test", wantText: "invalid_auth", setup: func(_ *testing.T, _ *slacktest.Server, _ *upgradetest.Server, env map[string]string) {
			env["SLACK_BOT_TOKEN"] = "xoxb-not-the-right-bot-token"
		}},
		{name: "revoked app token", failing: "slack socket mode", wantText: "invalid_auth", setup: func(_ *testing.T, sl *slacktest.Server, _ *upgradetest.Server, _ map[string]string) {
			sl.RevokeAppToken()
		}},
		{name: "wrong geminidb token", failing: "geminidb", wantText: "APIG.0301", setup: func(_ *testing.T, _ *slacktest.Server, _ *upgradetest.Server, env map[string]string) {
			env["GEMINIDB_AUTH_TOKEN"] = "MIIwrong-geminidb-token-0000"
		}},
		{name: "corrupted store", failing: "store", wantText: "damaged", setup: func(t *testing.T, _ *slacktest.Server, _ *upgradetest.Server, env map[string]string) {
			if err := os.WriteFile(env["BOT_STORE"], bytes.Repeat([]byte("not a bbolt file "), 1024), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "redis store answers", setup: func(t *testing.T, _ *slacktest.Server, _ *upgradetest.Server, env map[string]string) {
			env["BOT_STORE"] = "redis://" + storetest.StartRedis(t) + "/0"
		}},
		{name: "redis store unreachable", failing: "store", wantText: "cannot reach Redis", setup: func(t *testing.T, _ *slacktest.Server, _ *upgradetest.Server, env map[string]string) {
			env["BOT_STORE"] = fmt.Sprintf("redis://:redis-secret-pw@127.0.0.1:%d/0", storetest.FreePort(t))
		}},
		{name: "store directory missing", failing: "store", wantText: "cannot create", setup: func(t *testing.T, _ *slacktest.Server, _ *upgradetest.Server, env map[string]string) {
			env["BOT_STORE"] = filepath.Join(t.TempDir(), "missing", "bot.db")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sl, gdb, env := fakeEnv(t)
			if tt.setup != nil {
				tt.setup(t, sl, gdb, env)
			}
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), []string{"doctor"}, MapLookup(env), &stdout, &stderr)
			out := stdout.String()
			wantCode := exitOK
			if tt.failing != "" {
				wantCode = exitFailed
			}
			if code != wantCode {
				t.Errorf("got exit status %d, want %d\n%s%s", code, wantCode, out, stderr.String())
			}
			got := doctorLines(out)
			for _, name := range doctorChecks {
				want := "PASS"
				if name == tt.failing {
					want = "FAIL"
				}
				if got[name] != want {
					t.Errorf("check %q: got %q, want %s\n%s", name, got[name], want, out)
				}
			}
			if tt.failing != "" {
				for _, line := range strings.Split(out, "\n") {
					if strings.HasPrefix(line, "FAIL") && !strings.Contains(line, tt.wantText) {
						t.Errorf("got %q, want the reason %q", line, tt.wantText)
					}
				}
			}
			for _, secret := range []string{testGeminiToken, env["GEMINIDB_AUTH_TOKEN"], env["SLACK_BOT_TOKEN"], env["SLACK_APP_TOKEN"], "redis-secret-pw"} {
				if strings.Contains(out+stderr.String(), secret) {
					t.Errorf("the doctor printed a secret value:\n%s", out)
				}
			}
			if _, err := os.Stat(env["BOT_STORE"]); tt.name == "all pass, no store yet" && err == nil {
				t.Errorf("doctor created the store file %s; it should only check it can be created", env["BOT_STORE"])
			}
			if v := sl.Violations(); len(v) > 0 {
				t.Errorf("Slack protocol violations by the doctor: %q", v)
			}
		})
	}
}

// A configuration error is the first FAIL line and the other checks do not run.
func TestDoctorConfigError(t *testing.T) {
	_, _, env := fakeEnv(t)
	env["GEMINIDB_ENDPOINT"] = "not-a-url"
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"doctor"}, MapLookup(env), &stdout, &stderr); code != exitFailed {
		t.Errorf("got exit status %d, want %d", code, exitFailed)
	}
	got := doctorLines(stdout.String())
	if got["configuration"] != "FAIL" || len(got) != 1 {
		t.Errorf("got %v, want only configuration: FAIL\n%s", got, stdout.String())
	}
	if !strings.Contains(stdout.String(), "GEMINIDB_ENDPOINT") {
		t.Errorf("got %q, want it to name GEMINIDB_ENDPOINT", stdout.String())
	}
}

func TestVersionSubcommand(t *testing.T) {
	old := version
	version = "v1.2.3-test"
	t.Cleanup(func() { version = old })
	for _, arg := range []string{"version", "--version"} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), []string{arg}, MapLookup(nil), &stdout, &stderr); code != exitOK {
			t.Errorf("%s: got exit status %d, want 0", arg, code)
		}
		if got, want := stdout.String(), "geminidb-patch-bot v1.2.3-test\n"; got != want {
			t.Errorf("%s: got %q, want %q", arg, got, want)
		}
	}
}

// doctor warns (without failing) when Redis would lose or evict the store:
// persistence off, or a maxmemory-policy other than noeviction.
func TestDoctorWarnsAboutRedisDurability(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want []string
		not  []string
	}{
		{"no persistence", nil, []string{"persistence is off"}, []string{"maxmemory-policy is"}},
		{"evicting, append-only", []string{"--appendonly", "yes", "--maxmemory-policy", "allkeys-lru"}, []string{"maxmemory-policy is allkeys-lru"}, []string{"persistence is off"}},
		{"durable", []string{"--appendonly", "yes", "--maxmemory-policy", "noeviction"}, nil, []string{"WARN"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, _, env := fakeEnv(t)
			env["BOT_STORE"] = "redis://" + storetest.StartRedis(t, append(tt.args, "--dir", t.TempDir())...) + "/0"
			var stdout, stderr bytes.Buffer
			if code := run(context.Background(), []string{"doctor"}, MapLookup(env), &stdout, &stderr); code != exitOK {
				t.Errorf("got exit status %d, want 0 (warnings do not fail)\n%s", code, stdout.String())
			}
			out := stdout.String()
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("doctor does not warn %q:\n%s", w, out)
				}
			}
			for _, w := range tt.not {
				if strings.Contains(out, w) {
					t.Errorf("doctor says %q:\n%s", w, out)
				}
			}
		})
	}
}
