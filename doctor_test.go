package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/config"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/slacktest"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store/storetest"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade/upgradetest"
)

// The doctor's checks, in the order it prints them.
var doctorChecks = []string{"configuration", "slack auth.test", "slack scopes", "slack socket mode", "geminidb", "store"}

// fakeConfig starts a fake Slack and a fake GeminiDB API and returns the
// configuration that points the bot at them.
func fakeConfig(t *testing.T, slackOpts ...slacktest.Option) (*slacktest.Server, *upgradetest.Server, config.Config) {
	t.Helper()
	sl := slacktest.New(t, slackOpts...)
	gdb := upgradetest.NewServer(t, upgradetest.WithToken(testGeminiToken))
	return sl, gdb, botConfig(t, sl, gdb)
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
		setup    func(t *testing.T, sl *slacktest.Server, gdb *upgradetest.Server, c *config.Config)
		failing  string // the one check that must fail; "" = all pass
		wantText string // in the failing line
		wantFix  string // in the fix printed under it
		slack    []slacktest.Option
	}{
		{name: "all pass, no store yet"},
		{name: "all pass, existing store", setup: func(t *testing.T, _ *slacktest.Server, _ *upgradetest.Server, c *config.Config) {
			st, err := store.Open(c.Store)
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "bot token without a scope", failing: "slack scopes", wantText: "lacks usergroups:read", wantFix: "reinstall",
			slack: []slacktest.Option{slacktest.WithScopes("commands", "chat:write", "channels:read", "groups:read", "channels:history")}},
		{name: "bad bot token", failing: "slack auth.test", wantText: "invalid_auth", wantFix: "Bot User OAuth Token", setup: func(_ *testing.T, _ *slacktest.Server, _ *upgradetest.Server, c *config.Config) {
			c.SlackBotToken = "xoxb-not-the-right-bot-token"
		}},
		{name: "revoked app token", failing: "slack socket mode", wantText: "invalid_auth", wantFix: "connections:write", setup: func(_ *testing.T, sl *slacktest.Server, _ *upgradetest.Server, _ *config.Config) {
			sl.RevokeAppToken()
		}},
		{name: "wrong geminidb token", failing: "geminidb", wantText: "APIG.0301", wantFix: "renew GEMINIDB_AUTH_TOKEN", setup: func(_ *testing.T, _ *slacktest.Server, _ *upgradetest.Server, c *config.Config) {
			c.GeminiDBAuthToken = "MIIwrong-geminidb-token-0000"
		}},
		{name: "corrupted store", failing: "store", wantText: "damaged", wantFix: "move it aside", setup: func(t *testing.T, _ *slacktest.Server, _ *upgradetest.Server, c *config.Config) {
			if err := os.WriteFile(c.Store, bytes.Repeat([]byte("not a bbolt file "), 1024), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "redis store answers", setup: func(t *testing.T, _ *slacktest.Server, _ *upgradetest.Server, c *config.Config) {
			c.Store = "redis://" + storetest.StartRedis(t) + "/0"
		}},
		{name: "redis store unreachable", failing: "store", wantText: "cannot reach Redis", wantFix: "Redis server answers", setup: func(t *testing.T, _ *slacktest.Server, _ *upgradetest.Server, c *config.Config) {
			c.Store = fmt.Sprintf("redis://:redis-secret-pw@127.0.0.1:%d/0", storetest.FreePort(t))
		}},
		{name: "store directory missing", failing: "store", wantText: "cannot create", wantFix: "writable path", setup: func(t *testing.T, _ *slacktest.Server, _ *upgradetest.Server, c *config.Config) {
			c.Store = filepath.Join(t.TempDir(), "missing", "bot.db")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sl, gdb, cfg := fakeConfig(t, tt.slack...)
			if tt.setup != nil {
				tt.setup(t, sl, gdb, &cfg)
			}
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), []string{"doctor"}, withConfig(cfg), &stdout, &stderr)
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
				if name == "slack scopes" && tt.failing == "slack auth.test" {
					want = "" // not checked without a token Slack accepts
				}
				if got[name] != want {
					t.Errorf("check %q: got %q, want %s\n%s", name, got[name], want, out)
				}
			}
			if tt.failing != "" {
				lines := strings.Split(out, "\n")
				for i, line := range lines {
					if !strings.HasPrefix(line, "FAIL") {
						continue
					}
					if !strings.Contains(line, tt.wantText) {
						t.Errorf("got %q, want the reason %q", line, tt.wantText)
					}
					// The fix is printed beside the failure, on the next line.
					if i+1 >= len(lines) || !strings.Contains(lines[i+1], "fix: ") || !strings.Contains(lines[i+1], tt.wantFix) {
						t.Errorf("no fix containing %q under %q:\n%s", tt.wantFix, line, out)
					}
				}
			}
			for _, secret := range []string{testGeminiToken, cfg.GeminiDBAuthToken.Reveal(), cfg.SlackBotToken.Reveal(), cfg.SlackAppToken.Reveal(), "redis-secret-pw"} {
				if strings.Contains(out+stderr.String(), secret) {
					t.Errorf("the doctor printed a secret value:\n%s", out)
				}
			}
			if _, err := os.Stat(cfg.Store); tt.name == "all pass, no store yet" && err == nil {
				t.Errorf("doctor created the store file %s; it should only check it can be created", cfg.Store)
			}
			if v := sl.Violations(); len(v) > 0 {
				t.Errorf("Slack protocol violations by the doctor: %q", v)
			}
		})
	}
}

// A configuration error is the first FAIL line and the other checks do not run.
func TestDoctorConfigError(t *testing.T) {
	_, _, cfg := fakeConfig(t)
	cfg.GeminiDBEndpoint = "not-a-url"
	cfg.GeminiDBBatchEngines = []string{" "}
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"doctor"}, withConfig(cfg), &stdout, &stderr); code != exitFailed {
		t.Errorf("got exit status %d, want %d", code, exitFailed)
	}
	got := doctorLines(stdout.String())
	if got["configuration"] != "FAIL" || len(got) != 1 {
		t.Errorf("got %v, want only configuration: FAIL\n%s", got, stdout.String())
	}
	// Every problem at once, each on its line, then the fix.
	for _, want := range []string{"GEMINIDB_ENDPOINT", "GEMINIDB_BATCH_ENGINES", "fix: ", "--help env"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("got %q, want it to contain %s", stdout.String(), want)
		}
	}
}

func TestVersionSubcommand(t *testing.T) {
	old := version
	version = "v1.2.3-test"
	t.Cleanup(func() { version = old })
	for _, arg := range []string{"version", "--version"} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), []string{arg}, noEnv, &stdout, &stderr); code != exitOK {
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
			_, _, cfg := fakeConfig(t)
			cfg.Store = "redis://" + storetest.StartRedis(t, append(tt.args, "--dir", t.TempDir())...) + "/0"
			var stdout, stderr bytes.Buffer
			if code := run(context.Background(), []string{"doctor"}, withConfig(cfg), &stdout, &stderr); code != exitOK {
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

// The fake Slack's default scopes are the manifest's, so a test of doctor
// against it passes only if the manifest and the fake agree.
func TestFakeSlackScopesAreTheManifests(t *testing.T) {
	t.Parallel()
	want, err := manifestScopes()
	if err != nil {
		t.Fatal(err)
	}
	if len(want) == 0 || !slices.Equal(slacktest.DefaultScopes, want) {
		t.Errorf("slacktest.DefaultScopes = %q, manifest.yml's bot scopes = %q", slacktest.DefaultScopes, want)
	}
}
