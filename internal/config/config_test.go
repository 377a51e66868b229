package config

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Secret values the configuration tests put in a Config; none may ever be
// printed.
const (
	cfgAppToken  = "xapp-1-SECRETAPPTOKEN-4711"
	cfgBotToken  = "xoxb-SECRETBOTTOKEN-4711"
	cfgGemini    = "MIIsecret-geminidb-token-4711"
	cfgIAMPass   = "iam-secret-password-4711"
	cfgAccessKey = "AKSECRETACCESSKEY4711"
	cfgSecretKey = "SKsecret-secret-key-4711"
	cfgUserToken = "xoxp-SECRETUSERTOKEN-4711"
	cfgAppAsBot  = "xoxb-SECRETINAPPVAR-4711"
	cfgBadGemini = "ftp://secret-gaussdb.example.com"
	cfgURLPass   = "url-secret-pw-4711"
	cfgURLWithPW = "https://patchbot:" + cfgURLPass + "@gaussdb-nosql.eu-de.otc.t-systems.com"
	cfgIAMWithPW = "https://patchbot:" + cfgURLPass + "@iam.eu-de.otc.t-systems.com/v3"
	cfgConsolePW = "https://ops:" + cfgURLPass + "@console.example.com/{instance_id}"
)

var cfgSecrets = []string{cfgAppToken, cfgBotToken, cfgGemini, cfgIAMPass, cfgAccessKey, cfgSecretKey, cfgUserToken, cfgAppAsBot, cfgBadGemini, cfgURLPass}

// validConfig is a complete, valid configuration built in code (nothing
// listens there: these tests stop at the configuration).
func validConfig() Config {
	c := Defaults()
	c.SlackAppToken = cfgAppToken
	c.SlackBotToken = cfgBotToken
	c.GeminiDBEndpoint = "https://gaussdb-nosql.eu-de.otc.t-systems.com"
	c.GeminiDBProjectID = "0123456789abcdef"
	c.GeminiDBAuthToken = cfgGemini
	c.AllowedUsers = []string{"UALICE", "UBOB"}
	return c
}

func TestValidateDefaults(t *testing.T) {
	t.Parallel()
	cfg := validConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if mode, err := cfg.AuthMode(); err != nil || mode != AuthToken {
		t.Errorf("got auth mode %q, %v; want token", mode, err)
	}
	if len(cfg.Targets) != 1 || cfg.Targets[0].Name != DefaultTargetName || cfg.Targets[0].Auth.Token != cfgGemini {
		t.Errorf("got targets %+v, want the GEMINIDB_* variables as target %q", cfg.Targets, DefaultTargetName)
	}
}

// Each bad setting is a problem naming its variable, without its value.
func TestValidateErrors(t *testing.T) {
	t.Parallel()
	iam := func(c *Config) {
		c.GeminiDBIAMEndpoint, c.GeminiDBIAMUsername, c.GeminiDBIAMPassword, c.GeminiDBIAMDomain = "https://iam.example.com", "u", cfgIAMPass, "d"
	}
	tests := []struct {
		name    string
		change  func(c *Config)
		wantVar string
	}{
		{"app token missing", func(c *Config) { c.SlackAppToken = "" }, "SLACK_APP_TOKEN"},
		{"bot token missing", func(c *Config) { c.SlackBotToken = "" }, "SLACK_BOT_TOKEN"},
		{"bot token is a user token", func(c *Config) { c.SlackBotToken = cfgUserToken }, "SLACK_BOT_TOKEN"},
		{"tokens swapped", func(c *Config) { c.SlackAppToken = cfgAppAsBot }, "SLACK_APP_TOKEN"},
		{"slack api url not a url", func(c *Config) { c.SlackAPIURL = "slack.com/api" }, "SLACK_API_URL"},
		{"endpoint missing", func(c *Config) { c.GeminiDBEndpoint = "" }, "GEMINIDB_ENDPOINT"},
		{"endpoint not http(s)", func(c *Config) { c.GeminiDBEndpoint = cfgBadGemini }, "GEMINIDB_ENDPOINT"},
		{"endpoint without host", func(c *Config) { c.GeminiDBEndpoint = "https://" }, "GEMINIDB_ENDPOINT"},
		{"endpoint with user info", func(c *Config) { c.GeminiDBEndpoint = cfgURLWithPW }, "GEMINIDB_ENDPOINT"},
		{"project with slash", func(c *Config) { c.GeminiDBProjectID = "a/b" }, "GEMINIDB_PROJECT_ID"},
		{"no auth mode", func(c *Config) { c.GeminiDBAuthToken = "" }, "GEMINIDB_AUTH_TOKEN"},
		{"token and aksk", func(c *Config) { c.GeminiDBAccessKey, c.GeminiDBSecretKey = cfgAccessKey, cfgSecretKey }, "GEMINIDB_ACCESS_KEY"},
		{"token and iam", iam, "GEMINIDB_IAM_"},
		{"access key without secret key", func(c *Config) { c.GeminiDBAuthToken, c.GeminiDBAccessKey = "", cfgAccessKey }, "GEMINIDB_SECRET_KEY"},
		{"secret key without access key", func(c *Config) { c.GeminiDBAuthToken, c.GeminiDBSecretKey = "", cfgSecretKey }, "GEMINIDB_ACCESS_KEY"},
		{"half of iam", func(c *Config) {
			c.GeminiDBAuthToken, c.GeminiDBIAMEndpoint, c.GeminiDBIAMPassword = "", "https://iam.example.com", cfgIAMPass
		}, "GEMINIDB_IAM_USERNAME"},
		{"iam endpoint not a url", func(c *Config) { iam(c); c.GeminiDBAuthToken, c.GeminiDBIAMEndpoint = "", "iam.example.com" }, "GEMINIDB_IAM_ENDPOINT"},
		{"iam endpoint with user info", func(c *Config) { iam(c); c.GeminiDBAuthToken, c.GeminiDBIAMEndpoint = "", cfgIAMWithPW }, "GEMINIDB_IAM_ENDPOINT"},
		{"negative duration", func(c *Config) { c.PollInterval = -5 * time.Second }, "BOT_POLL_INTERVAL"},
		{"zero shutdown timeout", func(c *Config) { c.ShutdownTimeout = 0 }, "BOT_SHUTDOWN_TIMEOUT"},
		{"zero commands", func(c *Config) { c.CommandsPerMin = 0 }, "BOT_COMMANDS_PER_MINUTE"},
		{"allowed users missing", func(c *Config) { c.AllowedUsers = nil }, "BOT_ALLOWED_USERS"},
		{"allowed users blank", func(c *Config) { c.AllowedUsers = []string{" ", ""} }, "BOT_ALLOWED_USERS"},
		{"allowed users not ids", func(c *Config) { c.AllowedUsers = []string{"alice"} }, "BOT_ALLOWED_USERS"},
		{"channel not an id", func(c *Config) { c.AllowedChannels = []string{"#ops"} }, "BOT_ALLOWED_CHANNELS"},
		{"approver not an id", func(c *Config) { c.Approvers = []string{"bob"} }, "BOT_APPROVERS"},
		{"confirm TTL beyond Slack's response URLs", func(c *Config) { c.ConfirmTTL = 45 * time.Minute }, "BOT_CONFIRM_TTL"},
		{"retention not beyond follow", func(c *Config) { c.Retention, c.FollowFor = time.Hour, 6*time.Hour }, "BOT_RETENTION"},
		{"retention equal to follow", func(c *Config) { c.Retention, c.FollowFor = 6*time.Hour, 6*time.Hour }, "BOT_RETENTION"},
		{"store URL not redis", func(c *Config) { c.Store = "http://localhost:6379" }, "BOT_STORE"},
		{"redis store without host", func(c *Config) { c.Store = "redis://" }, "BOT_STORE"},
		{"console url not http", func(c *Config) { c.ConsoleURL = "console.example.com/{instance_id}" }, "BOT_CONSOLE_URL"},
		{"console url without instance", func(c *Config) { c.ConsoleURL = "https://console.example.com/{region}" }, "BOT_CONSOLE_URL"},
		{"console url unknown placeholder", func(c *Config) { c.ConsoleURL = "https://console.example.com/{instance}/{instance_id}" }, "BOT_CONSOLE_URL"},
		{"console url with a bar", func(c *Config) { c.ConsoleURL = "https://console.example.com/{instance_id}|x" }, "BOT_CONSOLE_URL"},
		{"console url with user info", func(c *Config) { c.ConsoleURL = cfgConsolePW }, "BOT_CONSOLE_URL"},
		{"region with a slash", func(c *Config) { c.GeminiDBRegion = "eu/de" }, "GEMINIDB_REGION"},
		{"log level", func(c *Config) { c.LogLevel = "loud" }, "LOG_LEVEL"},
		{"log format", func(c *Config) { c.LogFormat = "xml" }, "LOG_FORMAT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := validConfig()
			tt.change(&cfg)
			err := cfg.Validate()
			var ps Problems
			if !errors.As(err, &ps) || len(ps) != 1 {
				t.Fatalf("got %v, want exactly one problem", err)
			}
			var ve *VarError
			if !errors.As(err, &ve) || !strings.Contains(ve.Variable, tt.wantVar) {
				t.Errorf("got %v, want a *VarError naming %s", err, tt.wantVar)
			}
			for _, s := range cfgSecrets {
				if strings.Contains(err.Error(), s) {
					t.Errorf("the problem %q contains the value of a variable (%s…)", err, s[:6])
				}
			}
		})
	}
}

// Every problem is reported at once, one per line, each naming its variable.
func TestValidateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	var cfg Config // not even the defaults
	cfg.GeminiDBEndpoint = cfgURLWithPW
	err := cfg.Validate()
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("got %v, want Problems", err)
	}
	want := []string{"SLACK_APP_TOKEN", "SLACK_BOT_TOKEN", "SLACK_API_URL", "GEMINIDB_ENDPOINT", "GEMINIDB_PROJECT_ID",
		"GEMINIDB_BATCH_ENGINES", "GEMINIDB_AUTH_TOKEN", "BOT_ALLOWED_USERS", "BOT_CONFIRM_TTL", "BOT_POLL_INTERVAL",
		"BOT_FOLLOW_FOR", "BOT_SHUTDOWN_TIMEOUT", "BOT_RETENTION", "BOT_COMMANDS_PER_MINUTE", "BOT_MAX_OPEN_PLANS",
		"BOT_WORKERS", "BOT_QUEUE_SIZE", "BOT_POLL_CONCURRENCY", "BOT_MAX_INSTANCES", "BOT_FLEET_GUARD", "BOT_STORE", "BOT_HTTP_ADDR", "LOG_LEVEL", "LOG_FORMAT"}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) || len(ps) != len(want) {
		t.Errorf("got %d problems, want %d:\n%s", len(lines), len(want), err)
	}
	for i, name := range want {
		if i < len(lines) && !strings.HasPrefix(lines[i], name+": ") {
			t.Errorf("line %d: got %q, want it to name %s", i+1, lines[i], name)
		}
	}
	if strings.Contains(err.Error(), cfgURLPass) {
		t.Errorf("a problem repeats the password of a URL:\n%s", err)
	}
}

// A console URL template with every placeholder, and a region, are accepted.
func TestValidateConsoleURL(t *testing.T) {
	t.Parallel()
	const tmpl = "https://console.otc.t-systems.com/nosql/?region={region}&project={project_id}#/instances/{instance_id}"
	cfg := validConfig()
	cfg.ConsoleURL, cfg.GeminiDBRegion = tmpl, "eu-de"
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if cfg.ConsoleURL != tmpl || cfg.GeminiDBRegion != "eu-de" {
		t.Errorf("got %q, %q", cfg.ConsoleURL, cfg.GeminiDBRegion)
	}
}

// Every auth mode on its own is accepted.
func TestValidateAuthModes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(c *Config)
		want   AuthMode
	}{
		{"token", func(*Config) {}, AuthToken},
		{"aksk", func(c *Config) {
			c.GeminiDBAuthToken, c.GeminiDBAccessKey, c.GeminiDBSecretKey = "", cfgAccessKey, cfgSecretKey
		}, AuthAKSK},
		{"iam", func(c *Config) {
			c.GeminiDBAuthToken = ""
			c.GeminiDBIAMEndpoint, c.GeminiDBIAMUsername, c.GeminiDBIAMPassword, c.GeminiDBIAMDomain = "https://iam.example.com", "u", cfgIAMPass, "d"
		}, AuthIAM},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := validConfig()
			tt.change(&cfg)
			if err := cfg.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if got, _ := cfg.AuthMode(); got != tt.want || cfg.Targets[0].Auth.Mode != tt.want {
				t.Errorf("got auth mode %q (target %q), want %q", got, cfg.Targets[0].Auth.Mode, tt.want)
			}
		})
	}
}

// Logged URLs never carry user info, whatever their kind.
func TestRedactURL(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"https://gw.example.com/v3", "https://gw.example.com/v3"},
		{"https://user:" + cfgURLPass + "@gw.example.com/v3?x=1", "https://[redacted]@gw.example.com/v3?x=1"},
		{"https://user@gw.example.com", "https://[redacted]@gw.example.com"},
		{"https://u:p@a@gw.example.com/{instance_id}", "https://[redacted]@gw.example.com/{instance_id}"},
		{"redis://:" + cfgURLPass + "@redis:6379/0?password=" + cfgURLPass, "redis://[redacted]@redis:6379/0"},
		{"data/geminidb-patch.db", "data/geminidb-patch.db"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := RedactURL(tt.in); got != tt.want {
			t.Errorf("RedactURL(%q): got %q, want %q", tt.in, got, tt.want)
		}
	}
	cfg := validConfig()
	cfg.Store = "redis://:" + cfgURLPass + "@redis:6379/0"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := cfg.LogValue()["store"]; got != "redis://[redacted]@redis:6379/0" {
		t.Errorf("LogValue store: got %v", got)
	}
}

// Defaults holds exactly the defaults the envconfig tags give.
func TestDefaultsMatchTags(t *testing.T) {
	t.Parallel()
	d := reflect.ValueOf(Defaults())
	typ := d.Type()
	for i := range typ.NumField() {
		f := typ.Field(i)
		def, has := f.Tag.Lookup("default")
		got := d.Field(i).Interface()
		var want any = reflect.Zero(f.Type).Interface()
		if has {
			switch f.Type {
			case reflect.TypeFor[time.Duration]():
				want, _ = time.ParseDuration(def)
			case reflect.TypeFor[int]():
				var n int
				for _, r := range def {
					n = n*10 + int(r-'0')
				}
				want = n
			case reflect.TypeFor[[]string]():
				want = strings.Split(def, ",")
			default:
				want = def
			}
		}
		if f.Type.Kind() == reflect.Func {
			continue
		}
		if !reflect.DeepEqual(got, want) && !(reflect.ValueOf(got).IsZero() && reflect.ValueOf(want).IsZero()) {
			t.Errorf("%s: Defaults has %v, the tag says %v", f.Name, got, want)
		}
	}
}
