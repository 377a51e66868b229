package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/config"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/secret"
)

// Secret values the configuration tests use; none may ever be printed.
const (
	cfgAppToken  = "xapp-1-SECRETAPPTOKEN-4711"
	cfgBotToken  = "xoxb-SECRETBOTTOKEN-4711"
	cfgGemini    = "MIIsecret-geminidb-token-4711"
	cfgUserToken = "xoxp-SECRETUSERTOKEN-4711"
	tgtToken     = "MIItarget-token-secret-5521"
	tgtAK        = "TGTACCESSKEY5521XYZW"
	tgtSK        = "TgtSecretKey5521abcdefghijklmnopqrstuvw"
	tgtPassword  = "target-iam-password-5521"
)

// validConfig is a complete, valid configuration built in code (nothing
// listens there: these tests stop before connecting).
func validConfig() config.Config {
	c := config.Defaults()
	c.SlackAppToken = cfgAppToken
	c.SlackBotToken = cfgBotToken
	c.GeminiDBEndpoint = "https://gaussdb-nosql.eu-de.otc.t-systems.com"
	c.GeminiDBProjectID = "0123456789abcdef"
	c.GeminiDBAuthToken = cfgGemini
	c.AllowedUsers = []string{"UALICE", "UBOB"}
	return c
}

// noEnv is an environment without a single variable.
var noEnv = environ{config: config.FromEnv, lookup: config.MapLookup(nil)}

// A bad configuration stops the bot with status 2 and one line per
// problem, every problem at once, and no secret value.
func TestRunReportsEveryConfigProblem(t *testing.T) {
	t.Parallel()
	cfg := validConfig()
	cfg.SlackBotToken = cfgUserToken
	cfg.GeminiDBEndpoint = "https://u:" + cfgGemini + "@gaussdb.example.com"
	cfg.Retention = cfg.FollowFor
	cfg.LogFormat = "xml"
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), nil, withConfig(cfg), &stdout, &stderr); code != exitConfig {
		t.Errorf("got exit status %d, want %d; stderr:\n%s", code, exitConfig, stderr.String())
	}
	lines := strings.Split(strings.TrimRight(stderr.String(), "\n"), "\n")
	want := []string{"SLACK_BOT_TOKEN", "GEMINIDB_ENDPOINT", "BOT_RETENTION", "LOG_FORMAT"}
	if len(lines) != len(want) {
		t.Errorf("got %d lines, want %d:\n%s", len(lines), len(want), stderr.String())
	}
	for i, name := range want {
		if i < len(lines) && !strings.HasPrefix(lines[i], "geminidb-patch-bot: configuration error: "+name+": ") {
			t.Errorf("line %d: got %q, want it to name %s", i+1, lines[i], name)
		}
	}
	for _, s := range []string{cfgUserToken, cfgGemini} {
		if strings.Contains(stdout.String()+stderr.String(), s) {
			t.Errorf("the output contains a secret (%s…)", s[:6])
		}
	}
}

func TestUnknownArgument(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"frobnicate"}, noEnv, &stdout, &stderr); code != exitConfig {
		t.Errorf("got exit status %d, want %d", code, exitConfig)
	}
	if !strings.Contains(stderr.String(), "frobnicate") || !strings.Contains(stderr.String(), "doctor") {
		t.Errorf("got %q, want it to name the argument and list the subcommands", stderr.String())
	}
}

// --help lists every subcommand with one line each; --help env lists the
// variables (envconfig's table).
func TestHelp(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"--help", "-h", "help"} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), []string{arg}, noEnv, &stdout, &stderr); code != exitOK {
			t.Errorf("%s: got exit status %d", arg, code)
		}
		for _, sub := range []string{"demo", "doctor", "version", "compact", "healthcheck", "--help env"} {
			n := 0
			for _, line := range strings.Split(stdout.String(), "\n") {
				if strings.HasPrefix(strings.TrimSpace(line), sub+" ") {
					n++
				}
			}
			if n != 1 {
				t.Errorf("%s: %d lines describe %q, want 1:\n%s", arg, n, sub, stdout.String())
			}
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"--help", "env"}, noEnv, &stdout, &stderr); code != exitOK {
		t.Errorf("--help env: got exit status %d", code)
	}
	for _, want := range []string{"KEY", "DEFAULT", "SLACK_BOT_TOKEN", "BOT_STORE", "geminidb-patch.db"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("--help env lacks %q:\n%s", want, stdout.String())
		}
	}
}

// goodTargets is internal/config's valid targets file of four targets,
// one per auth mode.
var goodTargets = func() string {
	b, err := os.ReadFile("internal/config/testdata/targets.yaml")
	if err != nil {
		panic(err)
	}
	return string(b)
}()

// targetsConfig is a valid configuration with the targets file goodTargets
// and the variables it names.
func targetsConfig(t *testing.T) config.Config {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "targets.yaml")
	if err := os.WriteFile(file, []byte(goodTargets), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "de.token"), []byte(tgtToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := validConfig()
	c.GeminiDBEndpoint, c.GeminiDBProjectID, c.GeminiDBAuthToken = "", "", secret.Secret("")
	c.TargetsFile = file
	c.Approvers = []string{"UBOSS"}
	c.LookupEnv = config.MapLookup(map[string]string{"DE_TOKEN": tgtToken, "NL_AK": tgtAK, "NL_SK": tgtSK, "STAGE_PASSWORD": tgtPassword})
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

// The file's approver, channel and allowed lists are what the bot gets,
// target by target (a smoke test of the wiring; the behaviour is in
// e2e_targets_test.go), and the start-up log line names where the secrets
// are, not what they are.
func TestTargetsReachTheBot(t *testing.T) {
	t.Parallel()
	cfg := targetsConfig(t)
	targets, dbs, err := newTargets(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(targets) != 4 || len(dbs) != 4 {
		t.Fatalf("got %d targets and %d clients, want 4 each", len(targets), len(dbs))
	}
	if targets[0].Name != "prod-eu-de" || !slices.Equal(targets[0].Approvers, []string{"S0LEADS"}) || !slices.Equal(targets[1].Approvers, []string{"UBOSS"}) || len(targets[2].Approvers) != 0 {
		t.Errorf("got targets %+v", targets)
	}
	if !slices.Equal(targets[0].AllowedChannels, []string{"CDE1", "CDE2", "CDE3"}) || !slices.Equal(targets[0].AllowedUsers, []string{"UALICE", "S0DBAS"}) || targets[1].AllowedChannels != nil {
		t.Errorf("allowed lists: got %+v", targets[0])
	}
	if dbs[0] == dbs[3] {
		t.Error("two targets share a client; each needs its own credentials and breaker")
	}

	var logs bytes.Buffer
	cfg.HTTPAddr, cfg.Store = "127.0.0.1:0", filepath.Join(t.TempDir(), "bot.db")
	m, err := NewMain(cfg, &logs)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{tgtToken, tgtAK, tgtSK, tgtPassword} {
		if strings.Contains(logs.String(), s) {
			t.Errorf("the start-up log contains a secret (%s…)", s[:6])
		}
	}
	if !strings.Contains(logs.String(), "$DE_TOKEN") {
		t.Errorf("the start-up log does not say where the token comes from:\n%s", logs.String())
	}
}
