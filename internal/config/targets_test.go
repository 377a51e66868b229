package config

import (
	"errors"
	"os"
	"path/filepath"
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

// targetsConfig is a valid configuration without GEMINIDB_* target, with
// the variables the targets files name (in LookupEnv), and the targets file
// (whose text is yaml) and a secret file next to it.
func targetsConfig(t *testing.T, yaml string, env map[string]string) (Config, string) {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "targets.yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "de.token"), []byte(tgtFileTok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := validConfig()
	c.GeminiDBEndpoint, c.GeminiDBProjectID, c.GeminiDBAuthToken = "", "", ""
	c.TargetsFile = file
	c.Approvers = []string{"UBOSS"}
	vars := map[string]string{"DE_TOKEN": tgtToken, "NL_AK": tgtAK, "NL_SK": tgtSK, "STAGE_PASSWORD": tgtPassword}
	for k, v := range env {
		if v == "" {
			delete(vars, k)
		} else {
			vars[k] = v
		}
	}
	c.LookupEnv = MapLookup(vars)
	return c, file
}

// goodTargets is a valid targets file of four targets, one per auth mode
// (testdata/targets.yaml, which the root package's tests read too).
var goodTargets = mustRead("testdata/targets.yaml")

// mustRead returns the file at path, or panics: for test fixtures.
func mustRead(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// A valid file: every auth mode, secrets from variables and a file
// (relative to the targets file), defaults and approver overrides.
func TestTargetsFile(t *testing.T) {
	t.Parallel()
	cfg, file := targetsConfig(t, goodTargets, nil)
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
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
		{"de allowed channels", strings.Join(de.AllowedChannels, ","), "CDE1,CDE2,CDE3"},
		{"de allowed users", strings.Join(de.AllowedUsers, ","), "UALICE,S0DBAS"},
		{"nl allowed channels: any", len(nl.AllowedChannels), 0},
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
}

// Without BOT_TARGETS_FILE the GEMINIDB_* variables are the one target,
// named default, as before.
func TestTargetFromVariables(t *testing.T) {
	t.Parallel()
	cfg := validConfig()
	if err := cfg.Validate(); err != nil {
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

// A bad targets file is one problem naming the file, the target and the
// field; no secret is printed, nor the value of a
// field meant to name a variable or file (a secret may have been pasted).
func TestTargetsFileErrors(t *testing.T) {
	const head = "targets:\n"
	const de = "  - name: prod-eu-de\n    region: eu-de\n    endpoint: https://gaussdb-nosql.eu-de.otc.t-systems.com\n    project_id: 0123456789abcdef\n"
	const nl = "  - name: prod-eu-nl\n    region: eu-nl\n    endpoint: https://gaussdb-nosql.eu-nl.otc.t-systems.com\n    project_id: fedcba9876543210\n    auth: {token_env: DE_TOKEN}\n"
	tests := []struct {
		name   string
		yaml   string
		env    map[string]string // changes to the variables the file names; "" unsets
		change func(c *Config)
		target string // `"prod-eu-de"`, `#2`, or "" for the file
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
		{name: "channel not allowed", yaml: head + de + "    auth: {token_env: DE_TOKEN}\n    channels: [CDE9]\n", change: func(c *Config) { c.AllowedChannels = []string{"CDE1"} }, target: `"prod-eu-de"`, field: "channels", want: "not in BOT_ALLOWED_CHANNELS"},
		{name: "approver not an ID", yaml: head + de + "    auth: {token_env: DE_TOKEN}\n    approvers: [bob]\n", target: `"prod-eu-de"`, field: "approvers", want: "not a Slack user ID"},
		{name: "duplicate names", yaml: head + de + "    auth: {token_env: DE_TOKEN}\n" + strings.Replace(nl, "prod-eu-nl", "PROD-EU-DE", 1), target: `"PROD-EU-DE"`, field: "name", line: 7, want: "also the name of target #1"},
		{name: "key given twice", yaml: head + de + "    auth: {token_env: DE_TOKEN}\n    region: eu-nl\n", target: `"prod-eu-de"`, field: "region", want: "given twice"},
		{name: "endpoint with user info", yaml: head + "  - name: prod-eu-de\n    region: eu-de\n    endpoint: https://u:" + tgtToken + "@x.example.com\n    project_id: p\n    auth: {token_env: DE_TOKEN}\n", target: `"prod-eu-de"`, field: "endpoint", line: 4, want: "user name or password"},
		{name: "iam endpoint with user info", yaml: head + de + "    auth: {iam: {endpoint: 'https://u:" + tgtPassword + "@iam.example.com', username: u, password_env: STAGE_PASSWORD, domain: d}}\n", target: `"prod-eu-de"`, field: "auth.iam.endpoint", want: "user name or password"},
		{name: "allowed channel not an ID", yaml: head + de + "    auth: {token_env: DE_TOKEN}\n    allowed_channels: [ops]\n", target: `"prod-eu-de"`, field: "allowed_channels", line: 7, want: "not a Slack channel ID"},
		{name: "allowed channel not in BOT_ALLOWED_CHANNELS", yaml: head + de + "    auth: {token_env: DE_TOKEN}\n    allowed_channels: [CDE9]\n", change: func(c *Config) { c.AllowedChannels = []string{"CDE1"} }, target: `"prod-eu-de"`, field: "allowed_channels", want: "not in BOT_ALLOWED_CHANNELS"},
		{name: "default channel not allowed", yaml: head + de + "    auth: {token_env: DE_TOKEN}\n    channels: [CDE2]\n    allowed_channels: [CDE1]\n", target: `"prod-eu-de"`, field: "channels", want: "not in the target's allowed_channels"},
		{name: "allowed user not an ID", yaml: head + de + "    auth: {token_env: DE_TOKEN}\n    allowed_users: [alice]\n", target: `"prod-eu-de"`, field: "allowed_users", line: 7, want: "not a Slack user ID"},
		{name: "allowed users not a list", yaml: head + de + "    auth: {token_env: DE_TOKEN}\n    allowed_users: UALICE\n", target: `"prod-eu-de"`, field: "allowed_users", want: "must be a list"},
		{name: "no targets", yaml: "targets: []\n", field: "targets", want: "no target"},
		{name: "empty file", yaml: "", field: "targets", want: "empty"},
		{name: "not YAML", yaml: "targets: [\n", want: "not valid YAML"},
		{name: "file and GEMINIDB_ENDPOINT", yaml: goodTargets, change: func(c *Config) { c.GeminiDBEndpoint = "https://x.example.com" }, want: "not both"},
	}
	secrets := []string{tgtToken, tgtAK, tgtSK, tgtPassword, tgtFileTok, cfgAppToken, cfgBotToken}
	t.Parallel()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, file := targetsConfig(t, tt.yaml, tt.env)
			if tt.change != nil {
				tt.change(&cfg)
			}
			err := cfg.Validate()
			if err == nil {
				t.Fatal("Validate accepted it")
			}
			out := err.Error()
			lines := strings.Split(out, "\n")
			if len(lines) != 1 {
				t.Errorf("got %d problems, want exactly 1:\n%s", len(lines), out)
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

// Every problem of a targets file is reported at once: of every target,
// every field.
func TestTargetsFileEveryProblem(t *testing.T) {
	t.Parallel()
	yaml := "targets:\n" +
		"  - name: prod eu\n    endpoint: ftp://x\n    project_id: p\n    auth: {token_env: NO_SUCH}\n    allowed_users: [bob]\n" +
		"  - name: ok\n    region: eu-de\n    endpoint: https://x.example.com\n    auth: {access_key_env: NL_AK}\n"
	cfg, file := targetsConfig(t, yaml, nil)
	cfg.SlackAppToken = ""
	err := cfg.Validate()
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("got %v, want Problems", err)
	}
	want := []string{
		"SLACK_APP_TOKEN: is required",
		"target #1: field name (line 2)", "target #1: field region", "target #1: field endpoint (line 3)",
		"target #1: field auth.token_env", "target #1: field allowed_users",
		`target "ok": field project_id`, `target "ok": field auth.secret_key_env`,
	}
	if len(ps) != len(want) {
		t.Errorf("got %d problems, want %d:\n%s", len(ps), len(want), err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("the problems lack %q:\n%s", w, err)
		}
	}
	if !strings.Contains(err.Error(), file) {
		t.Errorf("the problems do not name the file:\n%s", err)
	}
}
