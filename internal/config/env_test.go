package config

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// clearEnv unsets every variable of Config for the test (t.Setenv restores
// them afterwards), so the test sees only what it sets.
func clearEnv(t *testing.T) {
	t.Helper()
	typ := reflect.TypeFor[Config]()
	for i := range typ.NumField() {
		if key := typ.Field(i).Tag.Get("envconfig"); key != "" {
			t.Setenv(key, "")
			if err := os.Unsetenv(key); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// The one test of the environment path (FromEnv, envconfig.Process): the
// variables reach their fields with the tags' defaults for the rest, and
// every missing or unreadable variable is reported at once, without its
// value. It sets the process environment, so it does not run in parallel.
func TestFromEnv(t *testing.T) {
	clearEnv(t)
	t.Setenv("SLACK_APP_TOKEN", cfgAppToken)
	t.Setenv("SLACK_BOT_TOKEN", cfgBotToken)
	t.Setenv("GEMINIDB_ENDPOINT", "https://gaussdb-nosql.eu-de.otc.t-systems.com/")
	t.Setenv("GEMINIDB_PROJECT_ID", "0123456789abcdef")
	t.Setenv("GEMINIDB_AUTH_TOKEN", cfgGemini)
	t.Setenv("BOT_ALLOWED_USERS", "UALICE, UBOB")
	t.Setenv("BOT_POLL_INTERVAL", "40ms")
	t.Setenv("BOT_CANARY", "2")
	cfg, err := FromEnv()
	if err != nil {
		t.Fatalf("FromEnv: %v", err)
	}
	want := Defaults()
	want.SlackAppToken, want.SlackBotToken = cfgAppToken, cfgBotToken
	want.GeminiDBEndpoint, want.GeminiDBProjectID, want.GeminiDBAuthToken = "https://gaussdb-nosql.eu-de.otc.t-systems.com", "0123456789abcdef", cfgGemini
	want.AllowedUsers = []string{"UALICE", "UBOB"}
	want.PollInterval, want.Canary = 40*time.Millisecond, 2
	if err := want.Validate(); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("FromEnv:\ngot  %+v\nwant %+v", cfg, want)
	}

	// Everything wrong at once: missing, unparsable, empty, invalid.
	clearEnv(t)
	t.Setenv("SLACK_BOT_TOKEN", cfgUserToken)
	t.Setenv("BOT_CONFIRM_TTL", "15 minutes")
	t.Setenv("BOT_WORKERS", "many")
	t.Setenv("BOT_STORE", "")
	t.Setenv("GEMINIDB_IAM_ENDPOINT", cfgIAMWithPW)
	_, err = FromEnv()
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("got %v, want Problems", err)
	}
	text := err.Error()
	for _, want := range []string{
		"SLACK_APP_TOKEN: is required but not set",
		"SLACK_BOT_TOKEN: must be a bot token",
		"BOT_ALLOWED_USERS: is required but not set",
		"BOT_CONFIRM_TTL: must be a duration",
		"BOT_WORKERS: must be a whole number",
		"BOT_STORE: must be a file path",
		"GEMINIDB_ENDPOINT: is required",
		"GEMINIDB_PROJECT_ID: is required",
		"GEMINIDB_IAM_USERNAME: must be set for IAM password login",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the problems lack %q:\n%s", want, text)
		}
	}
	if n := strings.Count(text, "BOT_ALLOWED_USERS"); n != 1 {
		t.Errorf("BOT_ALLOWED_USERS is reported %d times, want once:\n%s", n, text)
	}
	for _, s := range cfgSecrets {
		if strings.Contains(text, s) {
			t.Errorf("the problems contain the value of a variable (%s…):\n%s", s[:6], text)
		}
	}
}

// --help env prints every variable with its default.
func TestUsage(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	if err := Usage(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"SLACK_APP_TOKEN", "BOT_TARGETS_FILE", "BOT_RETENTION", "2160h", "geminidb-patch.db", "must exceed BOT_FOLLOW_FOR"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, b.String())
		}
	}
}
