package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Secret values the targets tests put in the environment and in files.
const (
	tgtToken    = "MIItarget-token-secret-5521"
	tgtAK       = "TGTACCESSKEY5521XYZW"
	tgtSK       = "TgtSecretKey5521abcdefghijklmnopqrstuvw"
	tgtPassword = "target-iam-password-5521"
	tgtFileTok  = "MIIfile-token-secret-5521"
)

// targetsEnv is a valid environment without GEMINIDB_* target, with the
// variables the targets files name, and the targets file (whose text is
// yaml) and a secret file next to it.
func targetsEnv(t *testing.T, yaml string) (map[string]string, string) {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "targets.yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "de.token"), []byte(tgtFileTok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := validEnvWith(map[string]string{"GEMINIDB_ENDPOINT": "", "GEMINIDB_PROJECT_ID": "", "GEMINIDB_AUTH_TOKEN": ""})
	env["BOT_TARGETS_FILE"] = file
	env["BOT_APPROVERS"] = "UBOSS"
	env["DE_TOKEN"] = tgtToken
	env["NL_AK"] = tgtAK
	env["NL_SK"] = tgtSK
	env["STAGE_PASSWORD"] = tgtPassword
	return env, file
}

const goodTargets = `targets:
  - name: prod-eu-de
    region: eu-de
    endpoint: https://gaussdb-nosql.eu-de.otc.t-systems.com/
    project_id: 0123456789abcdef0123456789abcdef
    auth: {token_env: DE_TOKEN}
    channels: [CDE1, CDE2]
    approvers: [S0LEADS]
  - name: prod-eu-nl
    region: eu-nl
    endpoint: https://gaussdb-nosql.eu-nl.otc.t-systems.com
    project_id: fedcba9876543210fedcba9876543210
    batch_engines: [Cassandra]
    auth: {access_key_env: NL_AK, secret_key_env: NL_SK}
    channels: [CNL1]
  - name: staging
    region: eu-de
    endpoint: https://gaussdb-nosql.eu-de.otc.t-systems.com
    project_id: 00112233445566778899aabbccddeeff
    auth:
      iam:
        endpoint: https://iam.eu-de.otc.t-systems.com
        username: patch-bot
        password_env: STAGE_PASSWORD
        domain: OTC-EU-DE-0000
    approvers: []
  - name: files
    region: eu-de
    endpoint: https://gaussdb-nosql.eu-de.otc.t-systems.com
    project_id: 99887766554433221100ffeeddccbbaa
    auth: {token_file: de.token}
`

// A valid file: every auth mode, secrets from variables and a file
// (relative to the targets file), defaults and approver overrides.
func TestTargetsFile(t *testing.T) {
	env, file := targetsEnv(t, goodTargets)
	cfg, err := LoadConfig(MapLookup(env))
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	if len(cfg.Targets) != 4 {
		t.Fatalf("got %d targets, want 4", len(cfg.Targets))
	}
	de, nl, stage, files := cfg.Targets[0], cfg.Targets[1], cfg.Targets[2], cfg.Targets[3]
	checks := []struct {
		name      string
		got, want any
	}{
		{"de label", de.Label(), "prod-eu-de (eu-de)"},
		{"de endpoint trimmed", de.Endpoint, "https://gaussdb-nosql.eu-de.otc.t-systems.com"},
		{"de mode", de.Auth.Mode, AuthToken},
		{"de token", de.Auth.Token.Reveal(), tgtToken},
		{"de engines default", strings.Join(de.BatchEngines, ","), "cassandra,influxdb"},
		{"de channels", strings.Join(de.Channels, ","), "CDE1,CDE2"},
		{"de approvers override", strings.Join(de.Approvers, ","), "S0LEADS"},
		{"nl mode", nl.Auth.Mode, AuthAKSK},
		{"nl keys", nl.Auth.AccessKey.Reveal() + "/" + nl.Auth.SecretKey.Reveal(), tgtAK + "/" + tgtSK},
		{"nl engines lowercased", strings.Join(nl.BatchEngines, ","), "cassandra"},
		{"nl approvers inherited", strings.Join(nl.Approvers, ","), "UBOSS"},
		{"stage mode", stage.Auth.Mode, AuthIAM},
		{"stage password", stage.Auth.IAMPassword.Reveal(), tgtPassword},
		{"stage approvers off", len(stage.Approvers), 0},
		{"files token", files.Auth.Token.Reveal(), tgtFileTok},
		{"files from", strings.Join(files.Auth.From, ","), filepath.Join(filepath.Dir(file), "de.token")},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
	// The start-up log line names where the secrets are, not what they are.
	var logs bytes.Buffer
	cfg.HTTPAddr, cfg.Store = "127.0.0.1:0", filepath.Join(t.TempDir(), "bot.db")
	m, err := NewMain(cfg, &logs)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{tgtToken, tgtAK, tgtSK, tgtPassword, tgtFileTok} {
		if strings.Contains(logs.String(), s) {
			t.Errorf("the start-up log contains a secret (%s…)", s[:6])
		}
	}
	if !strings.Contains(logs.String(), "$DE_TOKEN") {
		t.Errorf("the start-up log does not say where the token comes from:\n%s", logs.String())
	}
}

// Without BOT_TARGETS_FILE the GEMINIDB_* variables are the one target,
// named default, as before.
func TestTargetFromVariables(t *testing.T) {
	cfg, err := LoadConfig(MapLookup(validEnv()))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Targets) != 1 {
		t.Fatalf("got %d targets, want 1", len(cfg.Targets))
	}
	tg := cfg.Targets[0]
	if tg.Name != DefaultTargetName || tg.Endpoint != cfg.GeminiDBEndpoint || tg.ProjectID != cfg.GeminiDBProjectID || tg.Auth.Token != cfg.GeminiDBAuthToken {
		t.Errorf("got target %+v, want the GEMINIDB_* variables as target %q", tg, DefaultTargetName)
	}
}

// A bad targets file stops the bot with status 2 and one line naming the
// file, the target and the field; no secret is printed, nor the value of a
// field meant to name a variable or file (a secret may have been pasted).
func TestTargetsFileErrors(t *testing.T) {
	const head = "targets:\n"
	const de = "  - name: prod-eu-de\n    region: eu-de\n    endpoint: https://gaussdb-nosql.eu-de.otc.t-systems.com\n    project_id: 0123456789abcdef\n"
	const nl = "  - name: prod-eu-nl\n    region: eu-nl\n    endpoint: https://gaussdb-nosql.eu-nl.otc.t-systems.com\n    project_id: fedcba9876543210\n    auth: {token_env: DE_TOKEN}\n"
	tests := []struct {
		name   string
		yaml   string
		env    map[string]string // changes; "" unsets
		target string            // `"prod-eu-de"`, `#2`, or "" for the file
		field  string
		line   int // 0: not checked
		want   string
	}{
		{name: "unknown top-level key", yaml: head + de + "    auth: {token_env: DE_TOKEN}\nversion: 2\n", field: "version", line: 7, want: "unknown key"},
		{name: "unknown target key", yaml: head + de + "    auth: {token_env: DE_TOKEN}\n    regoin: eu-nl\n", target: `"prod-eu-de"`, field: "regoin", line: 7, want: "unknown key"},
		{name: "unknown auth key", yaml: head + de + "    auth: {token: DE_TOKEN}\n", target: `"prod-eu-de"`, field: "auth.token", line: 6, want: "unknown key"},
		{name: "unknown iam key", yaml: head + de + "    auth: {iam: {endpoint: https://iam.example.com, user: u, password_env: STAGE_PASSWORD, domain: d}}\n", target: `"prod-eu-de"`, field: "auth.iam.user", want: "unknown key"},
		{name: "secret pasted as a key", yaml: head + de + "    auth: {" + tgtToken + ": 1}\n", target: `"prod-eu-de"`, field: "auth", want: "unknown key"},
		{name: "secret pasted as auth", yaml: head + de + "    auth: " + tgtToken + "\n", target: `"prod-eu-de"`, field: "auth", want: "must be a mapping"},
		{name: "channels not a list", yaml: head + de + "    auth: {token_env: DE_TOKEN}\n    channels: CDE1\n", target: `"prod-eu-de"`, field: "channels", want: "must be a list"},
		{name: "missing endpoint", yaml: head + "  - name: prod-eu-de\n    region: eu-de\n    project_id: p\n    auth: {token_env: DE_TOKEN}\n", target: `"prod-eu-de"`, field: "endpoint", want: "is required"},
		{name: "endpoint not a URL", yaml: head + "  - name: prod-eu-de\n    region: eu-de\n    endpoint: ftp://x\n    project_id: p\n    auth: {token_env: DE_TOKEN}\n", target: `"prod-eu-de"`, field: "endpoint", line: 4, want: "http(s) URL"},
		{name: "missing name", yaml: head + "  - region: eu-de\n    endpoint: https://x.example.com\n    project_id: p\n    auth: {token_env: DE_TOKEN}\n", target: "#1", field: "name", want: "is required"},
		{name: "name not typeable", yaml: head + "  - name: prod eu\n    region: eu-de\n    endpoint: https://x.example.com\n    project_id: p\n    auth: {token_env: DE_TOKEN}\n", target: "#1", field: "name", want: "letters, digits"},
		{name: "missing region", yaml: head + "  - name: prod-eu-de\n    endpoint: https://x.example.com\n    project_id: p\n    auth: {token_env: DE_TOKEN}\n", target: `"prod-eu-de"`, field: "region", want: "is required"},
		{name: "missing project", yaml: head + "  - name: prod-eu-de\n    region: eu-de\n    endpoint: https://x.example.com\n    auth: {token_env: DE_TOKEN}\n", target: `"prod-eu-de"`, field: "project_id", want: "is required"},
		{name: "missing auth", yaml: head + de, target: `"prod-eu-de"`, field: "auth", want: "is required"},
		{name: "two auth modes", yaml: head + de + "    auth: {token_env: DE_TOKEN, access_key_env: NL_AK, secret_key_env: NL_SK}\n", target: `"prod-eu-de"`, field: "auth", line: 6, want: "only one authentication mode"},
		{name: "token from variable and file", yaml: head + de + "    auth: {token_env: DE_TOKEN, token_file: de.token}\n", target: `"prod-eu-de"`, field: "auth.token_env", want: "not both"},
		{name: "access key without secret key", yaml: head + de + "    auth: {access_key_env: NL_AK}\n", target: `"prod-eu-de"`, field: "auth.secret_key_env", want: "is required"},
		{name: "iam without domain", yaml: head + de + "    auth: {iam: {endpoint: https://iam.example.com, username: u, password_env: STAGE_PASSWORD}}\n", target: `"prod-eu-de"`, field: "auth.iam.domain", want: "is required"},
		{name: "secret variable unset", yaml: head + de + "    auth: {token_env: DE_TOKEN}\n", env: map[string]string{"DE_TOKEN": ""}, target: `"prod-eu-de"`, field: "auth.token_env", line: 6, want: "not set"},
		{name: "iam password variable unset", yaml: head + de + "    auth: {iam: {endpoint: https://iam.example.com, username: u, password_env: NO_SUCH_VAR, domain: d}}\n", target: `"prod-eu-de"`, field: "auth.iam.password_env", want: "not set"},
		{name: "secret pasted as variable name", yaml: head + de + "    auth: {token_env: " + tgtToken + "}\n", target: `"prod-eu-de"`, field: "auth.token_env", want: "not the name of an environment variable"},
		{name: "key pasted as variable name", yaml: head + de + "    auth: {access_key_env: " + tgtAK + ", secret_key_env: NL_SK}\n", target: `"prod-eu-de"`, field: "auth.access_key_env", want: "not set"},
		{name: "secret file missing", yaml: head + de + "    auth: {secret_key_file: " + tgtSK + ", access_key_env: NL_AK}\n", target: `"prod-eu-de"`, field: "auth.secret_key_file", want: "does not exist"},
		{name: "channel in two targets", yaml: head + de + "    auth: {token_env: DE_TOKEN}\n    channels: [CDE1]\n" + nl + "    channels: [CNL1, CDE1]\n", target: `"prod-eu-nl"`, field: "channels", want: "CDE1 is also a channel of target \"prod-eu-de\""},
		{name: "channel not an ID", yaml: head + de + "    auth: {token_env: DE_TOKEN}\n    channels: ['#ops']\n", target: `"prod-eu-de"`, field: "channels", want: "not a Slack channel ID"},
		{name: "channel not allowed", yaml: head + de + "    auth: {token_env: DE_TOKEN}\n    channels: [CDE9]\n", env: map[string]string{"BOT_ALLOWED_CHANNELS": "CDE1"}, target: `"prod-eu-de"`, field: "channels", want: "not in BOT_ALLOWED_CHANNELS"},
		{name: "approver not an ID", yaml: head + de + "    auth: {token_env: DE_TOKEN}\n    approvers: [bob]\n", target: `"prod-eu-de"`, field: "approvers", want: "not a Slack user ID"},
		{name: "duplicate names", yaml: head + de + "    auth: {token_env: DE_TOKEN}\n" + strings.Replace(nl, "prod-eu-nl", "PROD-EU-DE", 1), target: `"PROD-EU-DE"`, field: "name", line: 7, want: "also the name of target #1"},
		{name: "key given twice", yaml: head + de + "    auth: {token_env: DE_TOKEN}\n    region: eu-nl\n", target: `"prod-eu-de"`, field: "region", want: "given twice"},
		{name: "no targets", yaml: "targets: []\n", field: "targets", want: "no target"},
		{name: "empty file", yaml: "", field: "targets", want: "empty"},
		{name: "not YAML", yaml: "targets: [\n", want: "not valid YAML"},
		{name: "file and GEMINIDB_ENDPOINT", yaml: goodTargets, env: map[string]string{"GEMINIDB_ENDPOINT": "https://x.example.com"}, want: "not both"},
	}
	secrets := []string{tgtToken, tgtAK, tgtSK, tgtPassword, tgtFileTok, cfgAppToken, cfgBotToken}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env, file := targetsEnv(t, tt.yaml)
			for k, v := range tt.env {
				if v == "" {
					delete(env, k)
				} else {
					env[k] = v
				}
			}
			var stdout, stderr bytes.Buffer
			if code := run(context.Background(), nil, MapLookup(env), &stdout, &stderr); code != exitConfig {
				t.Errorf("got exit status %d, want %d; stderr:\n%s", code, exitConfig, stderr.String())
			}
			out := stdout.String() + stderr.String()
			lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
			if len(lines) != 1 {
				t.Errorf("got %d lines of output, want exactly 1:\n%s", len(lines), out)
			}
			wants := []string{"BOT_TARGETS_FILE", tt.want}
			if !strings.Contains(tt.name, "GEMINIDB_ENDPOINT") {
				wants = append(wants, file)
			}
			if tt.target != "" {
				wants = append(wants, "target "+tt.target)
			}
			if tt.field != "" {
				wants = append(wants, "field "+tt.field)
			}
			for _, w := range wants {
				if !strings.Contains(lines[0], w) {
					t.Errorf("got %q, want it to contain %q", lines[0], w)
				}
			}
			for _, s := range secrets {
				if strings.Contains(out, s) {
					t.Errorf("the output %q contains a secret (%s…)", out, s[:6])
				}
			}
			_, err := LoadConfig(MapLookup(env))
			var te *TargetsFileError
			if tt.target != "" || tt.field != "" {
				if !errors.As(err, &te) {
					t.Fatalf("LoadConfig: got %v, want a *TargetsFileError", err)
				}
				if te.File != file || te.Target != tt.target || te.Field != tt.field || (tt.line != 0 && te.Line != tt.line) {
					t.Errorf("got file %q, target %q, field %q, line %d; want %q, %q, %q, %d", te.File, te.Target, te.Field, te.Line, file, tt.target, tt.field, tt.line)
				}
			}
		})
	}
}

// The file's approver and channel lists are what the bot gets, target by
// target (a smoke test of the wiring; the behaviour is in e2e_targets_test.go).
func TestTargetsReachTheBot(t *testing.T) {
	env, _ := targetsEnv(t, goodTargets)
	cfg, err := LoadConfig(MapLookup(env))
	if err != nil {
		t.Fatal(err)
	}
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
	if dbs[0] == dbs[3] {
		t.Error("two targets share a client; each needs its own credentials and breaker")
	}
}
