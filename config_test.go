package main

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"strings"
	"testing"
)

// Secret values the configuration tests put into the environment; none may
// ever be printed.
const (
	cfgAppToken   = "xapp-1-SECRETAPPTOKEN-4711"
	cfgBotToken   = "xoxb-SECRETBOTTOKEN-4711"
	cfgGemini     = "MIIsecret-geminidb-token-4711"
	cfgIAMPass    = "iam-secret-password-4711"
	cfgAccessKey  = "AKSECRETACCESSKEY4711"
	cfgSecretKey  = "SKsecret-secret-key-4711"
	cfgUserToken  = "xoxp-SECRETUSERTOKEN-4711"
	cfgAppAsBot   = "xoxb-SECRETINAPPVAR-4711"
	cfgBadGemini  = "ftp://secret-gaussdb.example.com"
	cfgBadTimeout = "15 minutes"
)

// validEnv is a complete, valid configuration (nothing listens there: these
// tests stop at the configuration).
func validEnv() map[string]string {
	return map[string]string{
		"SLACK_APP_TOKEN":     cfgAppToken,
		"SLACK_BOT_TOKEN":     cfgBotToken,
		"GEMINIDB_ENDPOINT":   "https://gaussdb-nosql.eu-de.otc.t-systems.com",
		"GEMINIDB_PROJECT_ID": "0123456789abcdef",
		"GEMINIDB_AUTH_TOKEN": cfgGemini,
		"BOT_ALLOWED_USERS":   "UALICE,UBOB",
	}
}

func TestLoadConfigDefaults(t *testing.T) {
	cfg, err := LoadConfig(MapLookup(validEnv()))
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	if mode, err := cfg.AuthMode(); err != nil || mode != AuthToken {
		t.Errorf("got auth mode %q, %v; want token", mode, err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"SlackAPIURL", cfg.SlackAPIURL, "https://slack.com/api/"},
		{"Store", cfg.Store, "geminidb-patch.db"},
		{"HTTPAddr", cfg.HTTPAddr, ":8080"},
		{"ConfirmTTL", cfg.ConfirmTTL.String(), "15m0s"},
		{"PollInterval", cfg.PollInterval.String(), "30s"},
		{"ShutdownTimeout", cfg.ShutdownTimeout.String(), "30s"},
		{"BatchEngines", strings.Join(cfg.GeminiDBBatchEngines, ","), "cassandra,influxdb"},
		{"AllowedUsers", strings.Join(cfg.AllowedUsers, ","), "UALICE,UBOB"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
}

// A missing or malformed variable stops the bot with status 2 and one line
// that names the variable, and no secret value is printed.
// validEnvWith is validEnv changed by change; an empty value unsets the variable.
func validEnvWith(change map[string]string) map[string]string {
	env := validEnv()
	maps.Copy(env, change)
	for k, v := range env {
		if v == "" {
			delete(env, k)
		}
	}
	return env
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name    string
		change  map[string]string // "" value: unset
		wantVar string
	}{
		{name: "app token missing", change: map[string]string{"SLACK_APP_TOKEN": ""}, wantVar: "SLACK_APP_TOKEN"},
		{name: "bot token missing", change: map[string]string{"SLACK_BOT_TOKEN": ""}, wantVar: "SLACK_BOT_TOKEN"},
		{name: "bot token is a user token", change: map[string]string{"SLACK_BOT_TOKEN": cfgUserToken}, wantVar: "SLACK_BOT_TOKEN"},
		{name: "tokens swapped", change: map[string]string{"SLACK_APP_TOKEN": cfgAppAsBot}, wantVar: "SLACK_APP_TOKEN"},
		{name: "slack api url not a url", change: map[string]string{"SLACK_API_URL": "slack.com/api"}, wantVar: "SLACK_API_URL"},
		{name: "endpoint missing", change: map[string]string{"GEMINIDB_ENDPOINT": ""}, wantVar: "GEMINIDB_ENDPOINT"},
		{name: "endpoint not http(s)", change: map[string]string{"GEMINIDB_ENDPOINT": cfgBadGemini}, wantVar: "GEMINIDB_ENDPOINT"},
		{name: "endpoint without host", change: map[string]string{"GEMINIDB_ENDPOINT": "https://"}, wantVar: "GEMINIDB_ENDPOINT"},
		{name: "project with slash", change: map[string]string{"GEMINIDB_PROJECT_ID": "a/b"}, wantVar: "GEMINIDB_PROJECT_ID"},
		{name: "no auth mode", change: map[string]string{"GEMINIDB_AUTH_TOKEN": ""}, wantVar: "GEMINIDB_AUTH_TOKEN"},
		{name: "token and aksk", change: map[string]string{"GEMINIDB_ACCESS_KEY": cfgAccessKey, "GEMINIDB_SECRET_KEY": cfgSecretKey}, wantVar: "GEMINIDB_ACCESS_KEY"},
		{name: "token and iam", change: map[string]string{
			"GEMINIDB_IAM_ENDPOINT": "https://iam.example.com", "GEMINIDB_IAM_USERNAME": "u",
			"GEMINIDB_IAM_PASSWORD": cfgIAMPass, "GEMINIDB_IAM_DOMAIN": "d",
		}, wantVar: "GEMINIDB_IAM_"},
		{name: "access key without secret key", change: map[string]string{"GEMINIDB_AUTH_TOKEN": "", "GEMINIDB_ACCESS_KEY": cfgAccessKey}, wantVar: "GEMINIDB_SECRET_KEY"},
		{name: "secret key without access key", change: map[string]string{"GEMINIDB_AUTH_TOKEN": "", "GEMINIDB_SECRET_KEY": cfgSecretKey}, wantVar: "GEMINIDB_ACCESS_KEY"},
		{name: "half of iam", change: map[string]string{
			"GEMINIDB_AUTH_TOKEN": "", "GEMINIDB_IAM_ENDPOINT": "https://iam.example.com", "GEMINIDB_IAM_PASSWORD": cfgIAMPass,
		}, wantVar: "GEMINIDB_IAM_USERNAME"},
		{name: "iam endpoint not a url", change: map[string]string{
			"GEMINIDB_AUTH_TOKEN": "", "GEMINIDB_IAM_ENDPOINT": "iam.example.com", "GEMINIDB_IAM_USERNAME": "u",
			"GEMINIDB_IAM_PASSWORD": cfgIAMPass, "GEMINIDB_IAM_DOMAIN": "d",
		}, wantVar: "GEMINIDB_IAM_ENDPOINT"},
		{name: "bad duration", change: map[string]string{"BOT_CONFIRM_TTL": cfgBadTimeout}, wantVar: "BOT_CONFIRM_TTL"},
		{name: "negative duration", change: map[string]string{"BOT_POLL_INTERVAL": "-5s"}, wantVar: "BOT_POLL_INTERVAL"},
		{name: "zero shutdown timeout", change: map[string]string{"BOT_SHUTDOWN_TIMEOUT": "0s"}, wantVar: "BOT_SHUTDOWN_TIMEOUT"},
		{name: "bad number", change: map[string]string{"BOT_COMMANDS_PER_MINUTE": "ten"}, wantVar: "BOT_COMMANDS_PER_MINUTE"},
		{name: "allowed users missing", change: map[string]string{"BOT_ALLOWED_USERS": ""}, wantVar: "BOT_ALLOWED_USERS"},
		{name: "allowed users blank", change: map[string]string{"BOT_ALLOWED_USERS": " , "}, wantVar: "BOT_ALLOWED_USERS"},
		{name: "allowed users not ids", change: map[string]string{"BOT_ALLOWED_USERS": "alice"}, wantVar: "BOT_ALLOWED_USERS"},
		{name: "channel not an id", change: map[string]string{"BOT_ALLOWED_CHANNELS": "#ops"}, wantVar: "BOT_ALLOWED_CHANNELS"},
		{name: "approver not an id", change: map[string]string{"BOT_APPROVERS": "bob"}, wantVar: "BOT_APPROVERS"},
		{name: "confirm TTL beyond Slack's response URLs", change: map[string]string{"BOT_CONFIRM_TTL": "45m"}, wantVar: "BOT_CONFIRM_TTL"},
		{name: "store URL not redis", change: map[string]string{"BOT_STORE": "http://localhost:6379"}, wantVar: "BOT_STORE"},
		{name: "redis store without host", change: map[string]string{"BOT_STORE": "redis://"}, wantVar: "BOT_STORE"},
		{name: "console url not http", change: map[string]string{"BOT_CONSOLE_URL": "console.example.com/{instance_id}"}, wantVar: "BOT_CONSOLE_URL"},
		{name: "console url without instance", change: map[string]string{"BOT_CONSOLE_URL": "https://console.example.com/{region}"}, wantVar: "BOT_CONSOLE_URL"},
		{name: "console url unknown placeholder", change: map[string]string{"BOT_CONSOLE_URL": "https://console.example.com/{instance}/{instance_id}"}, wantVar: "BOT_CONSOLE_URL"},
		{name: "console url with a bar", change: map[string]string{"BOT_CONSOLE_URL": "https://console.example.com/{instance_id}|x"}, wantVar: "BOT_CONSOLE_URL"},
		{name: "region with a slash", change: map[string]string{"GEMINIDB_REGION": "eu/de"}, wantVar: "GEMINIDB_REGION"},
		{name: "log level", change: map[string]string{"LOG_LEVEL": "loud"}, wantVar: "LOG_LEVEL"},
		{name: "log format", change: map[string]string{"LOG_FORMAT": "xml"}, wantVar: "LOG_FORMAT"},
	}
	secrets := []string{cfgAppToken, cfgBotToken, cfgGemini, cfgIAMPass, cfgAccessKey, cfgSecretKey, cfgUserToken, cfgAppAsBot, cfgBadGemini}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := MapLookup(validEnvWith(tt.change))
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), nil, env, &stdout, &stderr)
			if code != exitConfig {
				t.Errorf("got exit status %d, want %d; stderr:\n%s", code, exitConfig, stderr.String())
			}
			out := stdout.String() + stderr.String()
			lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
			if len(lines) != 1 {
				t.Errorf("got %d lines of output, want exactly 1:\n%s", len(lines), out)
			}
			if !strings.Contains(lines[0], tt.wantVar) {
				t.Errorf("got %q, want it to name %s", lines[0], tt.wantVar)
			}
			for _, s := range secrets {
				if strings.Contains(out, s) {
					t.Errorf("the output %q contains the value of a variable (%s…)", out, s[:6])
				}
			}
			// The error itself names the variable as a ConfigError.
			_, err := LoadConfig(env)
			var ce *ConfigError
			if !errors.As(err, &ce) || !strings.Contains(ce.Variable, tt.wantVar) {
				t.Errorf("LoadConfig: got %v, want a *ConfigError naming %s", err, tt.wantVar)
			}
		})
	}
}

// A console URL template with every placeholder, and a region, are accepted.
func TestConfigConsoleURL(t *testing.T) {
	const tmpl = "https://console.otc.t-systems.com/nosql/?region={region}&project={project_id}#/instances/{instance_id}"
	cfg, err := LoadConfig(MapLookup(validEnvWith(map[string]string{"BOT_CONSOLE_URL": tmpl, "GEMINIDB_REGION": "eu-de"})))
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	if cfg.ConsoleURL != tmpl || cfg.GeminiDBRegion != "eu-de" {
		t.Errorf("got %q, %q", cfg.ConsoleURL, cfg.GeminiDBRegion)
	}
	cfg, err = LoadConfig(MapLookup(validEnv()))
	if err != nil || cfg.ConsoleURL != "" || cfg.GeminiDBRegion != "" {
		t.Errorf("defaults: got %q, %q, %v; want both empty", cfg.ConsoleURL, cfg.GeminiDBRegion, err)
	}
}

// Every auth mode on its own is accepted.
func TestConfigAuthModes(t *testing.T) {
	tests := []struct {
		name   string
		change map[string]string
		want   AuthMode
	}{
		{"token", nil, AuthToken},
		{"aksk", map[string]string{"GEMINIDB_AUTH_TOKEN": "", "GEMINIDB_ACCESS_KEY": cfgAccessKey, "GEMINIDB_SECRET_KEY": cfgSecretKey}, AuthAKSK},
		{"iam", map[string]string{
			"GEMINIDB_AUTH_TOKEN": "", "GEMINIDB_IAM_ENDPOINT": "https://iam.example.com", "GEMINIDB_IAM_USERNAME": "u",
			"GEMINIDB_IAM_PASSWORD": cfgIAMPass, "GEMINIDB_IAM_DOMAIN": "d",
		}, AuthIAM},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := LoadConfig(MapLookup(validEnvWith(tt.change)))
			if err != nil {
				t.Fatalf("LoadConfig: %v", err)
			}
			if got, _ := cfg.AuthMode(); got != tt.want {
				t.Errorf("got auth mode %q, want %q", got, tt.want)
			}
		})
	}
}

func TestUnknownArgument(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"frobnicate"}, MapLookup(nil), &stdout, &stderr); code != exitConfig {
		t.Errorf("got exit status %d, want %d", code, exitConfig)
	}
	if !strings.Contains(stderr.String(), "frobnicate") {
		t.Errorf("got %q, want it to name the argument", stderr.String())
	}
}
