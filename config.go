package main

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/secret"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
)

// Config is every setting the bot reads from the environment. It is read
// once, in main, and validated before anything starts.
type Config struct {
	SlackAppToken secret.Secret `env:"SLACK_APP_TOKEN" required:"true"`
	SlackBotToken secret.Secret `env:"SLACK_BOT_TOKEN" required:"true"`
	SlackAPIURL   string        `env:"SLACK_API_URL" default:"https://slack.com/api/"`

	GeminiDBEndpoint     string        `env:"GEMINIDB_ENDPOINT"`   // required unless BOT_TARGETS_FILE
	GeminiDBProjectID    string        `env:"GEMINIDB_PROJECT_ID"` // required unless BOT_TARGETS_FILE
	GeminiDBBatchEngines []string      `env:"GEMINIDB_BATCH_ENGINES" default:"cassandra,influxdb"`
	GeminiDBAuthToken    secret.Secret `env:"GEMINIDB_AUTH_TOKEN"`
	GeminiDBAccessKey    secret.Secret `env:"GEMINIDB_ACCESS_KEY"`
	GeminiDBSecretKey    secret.Secret `env:"GEMINIDB_SECRET_KEY"`
	GeminiDBIAMEndpoint  string        `env:"GEMINIDB_IAM_ENDPOINT"`
	GeminiDBIAMUsername  string        `env:"GEMINIDB_IAM_USERNAME"`
	GeminiDBIAMPassword  secret.Secret `env:"GEMINIDB_IAM_PASSWORD"`
	GeminiDBIAMDomain    string        `env:"GEMINIDB_IAM_DOMAIN"`
	GeminiDBRegion       string        `env:"GEMINIDB_REGION"`

	// ConsoleURL is the console page of an instance, a template with
	// {region}, {project_id} and {instance_id}: messages link instance
	// names to it. Empty: no links.
	ConsoleURL  string `env:"BOT_CONSOLE_URL"`
	TargetsFile string `env:"BOT_TARGETS_FILE"` // YAML file of targets; replaces the GEMINIDB_* target

	AllowedUsers    []string      `env:"BOT_ALLOWED_USERS"`
	AllowedChannels []string      `env:"BOT_ALLOWED_CHANNELS"`
	Approvers       []string      `env:"BOT_APPROVERS"`
	ConfirmTTL      time.Duration `env:"BOT_CONFIRM_TTL" default:"15m"`
	PollInterval    time.Duration `env:"BOT_POLL_INTERVAL" default:"30s"`
	FollowFor       time.Duration `env:"BOT_FOLLOW_FOR" default:"6h"`
	CommandsPerMin  int           `env:"BOT_COMMANDS_PER_MINUTE" default:"10"`
	MaxOpenPlans    int           `env:"BOT_MAX_OPEN_PLANS" default:"3"`
	Store           string        `env:"BOT_STORE" default:"geminidb-patch.db"`
	HTTPAddr        string        `env:"BOT_HTTP_ADDR" default:":8080"`
	ShutdownTimeout time.Duration `env:"BOT_SHUTDOWN_TIMEOUT" default:"30s"`
	Retention       time.Duration `env:"BOT_RETENTION" default:"2160h"`
	Canary          int           `env:"BOT_CANARY" default:"0"`
	Workers         int           `env:"BOT_WORKERS" default:"32"`
	QueueSize       int           `env:"BOT_QUEUE_SIZE" default:"1000"`
	PollConcurrency int           `env:"BOT_POLL_CONCURRENCY" default:"32"`

	LogLevel  string `env:"LOG_LEVEL" default:"info"`
	LogFormat string `env:"LOG_FORMAT" default:"json"`

	// Targets are the GeminiDB targets the bot patches: those of
	// BOT_TARGETS_FILE, or the one the GEMINIDB_* variables define.
	// LoadConfig fills it.
	Targets []Target

	// Now is the bot's clock (plan expiry, leases, the store's times); nil
	// means time.Now. Not read from the environment: tests set it.
	Now func() time.Time
}

// AuthMode names the GeminiDB authentication the configuration selects.
type AuthMode string

// The GeminiDB authentication modes.
const (
	AuthToken AuthMode = "token"
	AuthIAM   AuthMode = "iam"
	AuthAKSK  AuthMode = "aksk"
)

// ConfigError names the variable that is wrong and what is wrong with it.
// Its text is safe to print: it never contains a value of a secret.
type ConfigError struct {
	Variable string
	Problem  string
}

// Error renders "VARIABLE: what is wrong".
func (e *ConfigError) Error() string { return e.Variable + ": " + e.Problem }

// LoadConfig reads the variables through lookup (os.LookupEnv in main) into
// a Config and validates it. Taking the lookup instead of reading the
// process environment lets tests and the demo build configurations side by
// side, without touching the environment of the process.
func LoadConfig(lookup func(string) (string, bool)) (Config, error) {
	var c Config
	if err := readVars(&c, lookup); err != nil {
		return Config{}, err
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	targets, err := loadTargets(&c, lookup, os.ReadFile)
	if err != nil {
		return Config{}, err
	}
	c.Targets = targets
	return c, nil
}

// readVars fills c from lookup, field by field, as its tags say:
// `env` names the variable, `default` gives the value when it is
// unset or empty, `required` refuses an unset one. Errors name the variable
// and never repeat its value (it may be a secret).
func readVars(c *Config, lookup func(string) (string, bool)) error {
	v := reflect.ValueOf(c).Elem()
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name := f.Tag.Get("env")
		if name == "" {
			continue
		}
		raw, ok := lookup(name)
		if !ok || raw == "" {
			if f.Tag.Get("required") == "true" {
				return &ConfigError{Variable: name, Problem: "is required but not set"}
			}
			if raw, ok = f.Tag.Lookup("default"); !ok {
				continue
			}
		}
		if err := setField(v.Field(i), raw); err != nil {
			return &ConfigError{Variable: name, Problem: err.Error()}
		}
	}
	return nil
}

// setField parses raw into one Config field.
func setField(field reflect.Value, raw string) error {
	switch p := field.Addr().Interface().(type) {
	case *secret.Secret:
		*p = secret.Secret(raw)
	case *string:
		*p = raw
	case *[]string:
		*p = strings.Split(raw, ",")
	case *time.Duration:
		d, err := time.ParseDuration(strings.TrimSpace(raw))
		if err != nil {
			return errors.New("must be a duration such as 30s, 15m or 6h")
		}
		*p = d
	case *int:
		n, err := strconv.Atoi(strings.TrimSpace(raw))
		if err != nil {
			return errors.New("must be a whole number")
		}
		*p = n
	default:
		return fmt.Errorf("has an unsupported type %s", field.Type())
	}
	return nil
}

// MapLookup is a lookup over a fixed set of variables, for LoadConfig.
func MapLookup(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}
}

// Validate checks every setting and returns the first problem found.
func (c *Config) Validate() error {
	bad := func(v, p string) error { return &ConfigError{Variable: v, Problem: p} }
	if !strings.HasPrefix(c.SlackAppToken.Reveal(), "xapp-") {
		return bad("SLACK_APP_TOKEN", "must be an app-level token starting with xapp-")
	}
	if !strings.HasPrefix(c.SlackBotToken.Reveal(), "xoxb-") {
		return bad("SLACK_BOT_TOKEN", "must be a bot token starting with xoxb-")
	}
	if err := checkURL(c.SlackAPIURL); err != nil {
		return bad("SLACK_API_URL", err.Error())
	}
	if !strings.HasSuffix(c.SlackAPIURL, "/") {
		c.SlackAPIURL += "/"
	}
	if err := c.validateGeminiDB(); err != nil {
		return err
	}
	if strings.ContainsAny(c.GeminiDBRegion, "/?#&%{} ") {
		return bad("GEMINIDB_REGION", "must be a region name such as eu-de")
	}
	if c.ConsoleURL != "" {
		if err := checkConsoleURL(c.ConsoleURL); err != nil {
			return bad("BOT_CONSOLE_URL", err.Error())
		}
	}
	c.AllowedUsers = cleanList(c.AllowedUsers)
	if len(c.AllowedUsers) == 0 {
		return bad("BOT_ALLOWED_USERS", "is required: list the Slack user IDs (U…) or user-group IDs (S…) allowed to patch, or * for everyone")
	}
	for _, u := range c.AllowedUsers {
		if u != "*" && !isSlackID(u, "UWS") {
			return bad("BOT_ALLOWED_USERS", fmt.Sprintf("%q is not a Slack user ID (U…/W…), user-group ID (S…) or *", u))
		}
	}
	c.AllowedChannels = cleanList(c.AllowedChannels)
	for _, ch := range c.AllowedChannels {
		if !isSlackID(ch, "CGD") {
			return bad("BOT_ALLOWED_CHANNELS", fmt.Sprintf("%q is not a Slack channel ID (C…/G…)", ch))
		}
	}
	c.Approvers = cleanList(c.Approvers)
	for _, u := range c.Approvers {
		if !isSlackID(u, "UWS") {
			return bad("BOT_APPROVERS", fmt.Sprintf("%q is not a Slack user ID (U…/W…) or user-group ID (S…)", u))
		}
	}
	positive := map[string]time.Duration{
		"BOT_CONFIRM_TTL": c.ConfirmTTL, "BOT_POLL_INTERVAL": c.PollInterval,
		"BOT_FOLLOW_FOR": c.FollowFor, "BOT_SHUTDOWN_TIMEOUT": c.ShutdownTimeout,
	}
	for _, name := range []string{"BOT_CONFIRM_TTL", "BOT_POLL_INTERVAL", "BOT_FOLLOW_FOR", "BOT_SHUTDOWN_TIMEOUT"} {
		if positive[name] <= 0 {
			return bad(name, "must be a positive duration such as 30s or 15m")
		}
	}
	if c.ConfirmTTL > 30*time.Minute {
		return bad("BOT_CONFIRM_TTL", "must be at most 30m: Slack's response URLs, which update the plan message, last 30 minutes")
	}
	if c.Canary < 0 || c.Canary > 10 {
		return bad("BOT_CANARY", "must be a number from 0 (no canary) to 10")
	}
	if c.Retention <= 0 {
		return bad("BOT_RETENTION", "must be a positive duration such as 2160h (90 days)")
	}
	for name, n := range map[string]int{"BOT_WORKERS": c.Workers, "BOT_QUEUE_SIZE": c.QueueSize, "BOT_POLL_CONCURRENCY": c.PollConcurrency} {
		if n <= 0 {
			return bad(name, "must be a positive number")
		}
	}
	if c.CommandsPerMin <= 0 {
		return bad("BOT_COMMANDS_PER_MINUTE", "must be a positive number")
	}
	if c.MaxOpenPlans <= 0 {
		return bad("BOT_MAX_OPEN_PLANS", "must be a positive number")
	}
	if strings.TrimSpace(c.Store) == "" {
		return bad("BOT_STORE", "must be a file path")
	}
	if strings.Contains(c.Store, "://") {
		if u, err := url.Parse(c.Store); err != nil || !isRedisURL(c.Store) || u.Host == "" {
			return bad("BOT_STORE", "must be a file path or a redis://host:port/db (or rediss://) URL")
		}
	}
	if _, err := zerolog.ParseLevel(strings.ToLower(c.LogLevel)); err != nil || c.LogLevel == "" {
		return bad("LOG_LEVEL", "must be one of trace, debug, info, warn, error")
	}
	if c.LogFormat != "json" && c.LogFormat != "console" {
		return bad("LOG_FORMAT", "must be json or console")
	}
	return nil
}

// AuthMode returns the one GeminiDB authentication mode the variables select.
// Setting none, two, or only part of one is an error naming the variables.
func (c *Config) AuthMode() (AuthMode, error) {
	iamVars := map[string]bool{
		"GEMINIDB_IAM_ENDPOINT": c.GeminiDBIAMEndpoint != "", "GEMINIDB_IAM_USERNAME": c.GeminiDBIAMUsername != "",
		"GEMINIDB_IAM_PASSWORD": c.GeminiDBIAMPassword.Set(), "GEMINIDB_IAM_DOMAIN": c.GeminiDBIAMDomain != "",
	}
	iamOrder := []string{"GEMINIDB_IAM_ENDPOINT", "GEMINIDB_IAM_USERNAME", "GEMINIDB_IAM_PASSWORD", "GEMINIDB_IAM_DOMAIN"}
	var modes []AuthMode
	var names []string
	if c.GeminiDBAuthToken.Set() {
		modes, names = append(modes, AuthToken), append(names, "GEMINIDB_AUTH_TOKEN")
	}
	if c.GeminiDBAccessKey.Set() || c.GeminiDBSecretKey.Set() {
		if !c.GeminiDBAccessKey.Set() {
			return "", &ConfigError{"GEMINIDB_ACCESS_KEY", "must be set together with GEMINIDB_SECRET_KEY"}
		}
		if !c.GeminiDBSecretKey.Set() {
			return "", &ConfigError{"GEMINIDB_SECRET_KEY", "must be set together with GEMINIDB_ACCESS_KEY"}
		}
		modes, names = append(modes, AuthAKSK), append(names, "GEMINIDB_ACCESS_KEY/GEMINIDB_SECRET_KEY")
	}
	anyIAM := false
	for _, v := range iamVars {
		anyIAM = anyIAM || v
	}
	if anyIAM {
		for _, name := range iamOrder {
			if !iamVars[name] {
				return "", &ConfigError{name, "must be set for IAM password login (GEMINIDB_IAM_ENDPOINT, _USERNAME, _PASSWORD, _DOMAIN go together)"}
			}
		}
		if err := checkURL(c.GeminiDBIAMEndpoint); err != nil {
			return "", &ConfigError{"GEMINIDB_IAM_ENDPOINT", err.Error()}
		}
		modes, names = append(modes, AuthIAM), append(names, "GEMINIDB_IAM_*")
	}
	switch len(modes) {
	case 0:
		return "", &ConfigError{"GEMINIDB_AUTH_TOKEN", "no GeminiDB authentication is set: set GEMINIDB_AUTH_TOKEN, or GEMINIDB_ACCESS_KEY and GEMINIDB_SECRET_KEY, or the GEMINIDB_IAM_* variables"}
	case 1:
		return modes[0], nil
	default:
		return "", &ConfigError{strings.Join(names, ", "), "set only one GeminiDB authentication mode"}
	}
}

// LogValue returns the effective configuration for the start-up log line,
// secrets shown only as set or not.
func (c *Config) LogValue(mode AuthMode) map[string]any {
	return map[string]any{
		"slack_api_url": c.SlackAPIURL, "geminidb_endpoint": c.GeminiDBEndpoint,
		"geminidb_project_id": c.GeminiDBProjectID, "batch_engines": c.GeminiDBBatchEngines,
		"auth_mode": string(mode), "iam_endpoint": c.GeminiDBIAMEndpoint,
		"allowed_users": c.AllowedUsers, "allowed_channels": c.AllowedChannels, "approvers": c.Approvers,
		"confirm_ttl": c.ConfirmTTL.String(), "poll_interval": c.PollInterval.String(),
		"follow_for": c.FollowFor.String(), "store": redactURL(c.Store), "http_addr": c.HTTPAddr,
		"commands_per_minute": c.CommandsPerMin, "max_open_plans": c.MaxOpenPlans,
		"retention": c.Retention.String(), "canary": c.Canary, "workers": c.Workers, "queue_size": c.QueueSize, "poll_concurrency": c.PollConcurrency,
		"geminidb_region": c.GeminiDBRegion, "console_url": c.ConsoleURL,
		"targets_file": c.TargetsFile, "targets": targetsLogValue(c.Targets),
	}
}

// redactURL drops the credentials of a URL (a redis:// store may carry a
// password); a file path is returned as it is.
func redactURL(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	return store.RedactURL(s)
}

// consolePlaceholders are what BOT_CONSOLE_URL may contain in braces.
var consolePlaceholders = []string{"{region}", "{project_id}", "{instance_id}"}

// checkConsoleURL checks a console URL template: an http(s) URL once its
// placeholders are filled in, naming {instance_id} (else every link would
// be the same page) and no placeholder it does not know. Characters that
// would break a link in a Slack message are refused.
func checkConsoleURL(tmpl string) error {
	if !strings.Contains(tmpl, "{instance_id}") {
		return errors.New("must contain {instance_id}, e.g. https://console.example.com/nosql/?region={region}#/instances/{instance_id}")
	}
	filled := tmpl
	for _, p := range consolePlaceholders {
		filled = strings.ReplaceAll(filled, p, "x")
	}
	if strings.ContainsAny(filled, "{}") {
		return errors.New("may contain only the placeholders {region}, {project_id} and {instance_id}")
	}
	if strings.ContainsAny(filled, "|<> \t\n") {
		return errors.New("must not contain spaces, |, < or >")
	}
	if err := checkURL(filled); err != nil {
		return errors.New("must be an http(s) URL template such as https://console.example.com/nosql/?region={region}#/instances/{instance_id}")
	}
	return nil
}

func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("must be an http(s) URL such as https://host")
	}
	return nil
}

func cleanList(in []string) []string {
	var out []string
	for _, s := range in {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func isSlackID(s, prefixes string) bool {
	if len(s) < 2 || len(s) > 24 || !strings.ContainsRune(prefixes, rune(s[0])) {
		return false
	}
	for _, r := range s {
		if !(r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}
