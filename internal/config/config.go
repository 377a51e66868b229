// Package config turns the environment (read with
// github.com/kelseyhightower/envconfig) and the targets file into one
// validated Config. Every problem is reported at once, each naming the
// variable, or the file, target, field and line, and never the value of a
// secret.
//
// main reads the environment with FromEnv. Tests and the demo build a
// Config directly (Defaults plus what they need) and call Validate, the
// same check FromEnv makes, so they need no process environment and run
// side by side.
package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/secret"
)

// Config is every setting of the bot. FromEnv reads it from the
// environment as its tags say (envconfig: the variable, its default,
// whether it is required, and the description `--help env` prints).
type Config struct {
	SlackAppToken secret.Secret `envconfig:"SLACK_APP_TOKEN" required:"true" desc:"Slack app-level token (xapp-…, connections:write) for Socket Mode"`
	SlackBotToken secret.Secret `envconfig:"SLACK_BOT_TOKEN" required:"true" desc:"Slack bot token (xoxb-…) with the manifest's scopes"`
	SlackAPIURL   string        `envconfig:"SLACK_API_URL" default:"https://slack.com/api/" desc:"Slack Web API base URL"`

	GeminiDBEndpoint     string        `envconfig:"GEMINIDB_ENDPOINT" desc:"GeminiDB API base URL of the one target (required unless BOT_TARGETS_FILE)"`
	GeminiDBProjectID    string        `envconfig:"GEMINIDB_PROJECT_ID" desc:"project ID of the one target (required unless BOT_TARGETS_FILE)"`
	GeminiDBBatchEngines []string      `envconfig:"GEMINIDB_BATCH_ENGINES" default:"cassandra,influxdb" desc:"engines the batch upgrade API accepts"`
	GeminiDBAuthToken    secret.Secret `envconfig:"GEMINIDB_AUTH_TOKEN" desc:"auth mode 1: an IAM token"`
	GeminiDBAccessKey    secret.Secret `envconfig:"GEMINIDB_ACCESS_KEY" desc:"auth mode 2: access key (with GEMINIDB_SECRET_KEY)"`
	GeminiDBSecretKey    secret.Secret `envconfig:"GEMINIDB_SECRET_KEY" desc:"auth mode 2: secret key"`
	GeminiDBIAMEndpoint  string        `envconfig:"GEMINIDB_IAM_ENDPOINT" desc:"auth mode 3: IAM endpoint for password login"`
	GeminiDBIAMUsername  string        `envconfig:"GEMINIDB_IAM_USERNAME" desc:"auth mode 3: IAM user name"`
	GeminiDBIAMPassword  secret.Secret `envconfig:"GEMINIDB_IAM_PASSWORD" desc:"auth mode 3: IAM password"`
	GeminiDBIAMDomain    string        `envconfig:"GEMINIDB_IAM_DOMAIN" desc:"auth mode 3: IAM domain (account) name"`
	GeminiDBRegion       string        `envconfig:"GEMINIDB_REGION" desc:"region of the one target, for console links (e.g. eu-de)"`

	// ConsoleURL is the console page of an instance, a template with
	// {region}, {project_id} and {instance_id}: messages link instance
	// names to it. Empty: no links.
	ConsoleURL  string `envconfig:"BOT_CONSOLE_URL" desc:"console page template with {region}, {project_id}, {instance_id}; empty: no links"`
	TargetsFile string `envconfig:"BOT_TARGETS_FILE" desc:"YAML file of several targets; replaces the GEMINIDB_* target"`

	AllowedUsers    []string      `envconfig:"BOT_ALLOWED_USERS" required:"true" desc:"user (U…/W…) or user-group (S…) IDs that may patch, or *"`
	AllowedChannels []string      `envconfig:"BOT_ALLOWED_CHANNELS" desc:"channel IDs where the command works; empty: any"`
	Approvers       []string      `envconfig:"BOT_APPROVERS" desc:"user or user-group IDs who approve; empty: the requester confirms"`
	ConfirmTTL      time.Duration `envconfig:"BOT_CONFIRM_TTL" default:"15m" desc:"how long a plan can be confirmed (at most 30m)"`
	PollInterval    time.Duration `envconfig:"BOT_POLL_INTERVAL" default:"30s" desc:"how often jobs are polled"`
	FollowFor       time.Duration `envconfig:"BOT_FOLLOW_FOR" default:"6h" desc:"how long a job is followed"`
	CommandsPerMin  int           `envconfig:"BOT_COMMANDS_PER_MINUTE" default:"10" desc:"commands per user per minute"`
	MaxOpenPlans    int           `envconfig:"BOT_MAX_OPEN_PLANS" default:"3" desc:"unconfirmed plans per user"`
	Store           string        `envconfig:"BOT_STORE" default:"geminidb-patch.db" desc:"bbolt file path, or a redis:// or rediss:// URL"`
	HTTPAddr        string        `envconfig:"BOT_HTTP_ADDR" default:":8080" desc:"address of /healthz, /readyz and /metrics"`
	// Pprof serves Go's profiler under /debug/pprof/ on HTTPAddr. Off by
	// default: a profile shows the program's internals.
	Pprof           bool          `envconfig:"BOT_PPROF" desc:"serve Go's profiler at /debug/pprof/ on BOT_HTTP_ADDR (true/false)"`
	ShutdownTimeout time.Duration `envconfig:"BOT_SHUTDOWN_TIMEOUT" default:"30s" desc:"how long a shutdown waits for work in flight"`
	Retention       time.Duration `envconfig:"BOT_RETENTION" default:"2160h" desc:"how long final requests are kept (must exceed BOT_FOLLOW_FOR)"`
	Canary          int           `envconfig:"BOT_CANARY" default:"0" desc:"default canary size, 0 to 10"`
	MaxInstances    int           `envconfig:"BOT_MAX_INSTANCES" default:"200" desc:"most instances one patch request may plan (selectors included)"`
	FleetGuard      int           `envconfig:"BOT_FLEET_GUARD" default:"10" desc:"above this many instances a canary of 1 is automatic unless --canary is given"`
	Workers         int           `envconfig:"BOT_WORKERS" default:"32" desc:"handlers running at once"`
	QueueSize       int           `envconfig:"BOT_QUEUE_SIZE" default:"1000" desc:"events waiting for a handler"`
	PollConcurrency int           `envconfig:"BOT_POLL_CONCURRENCY" default:"32" desc:"job polls running at once"`

	LogLevel  string `envconfig:"LOG_LEVEL" default:"info" desc:"trace, debug, info, warn or error"`
	LogFormat string `envconfig:"LOG_FORMAT" default:"json" desc:"json or console"`

	// Targets are the GeminiDB targets the bot patches: those of
	// BOT_TARGETS_FILE, or the one the GEMINIDB_* variables define.
	// Validate fills it.
	Targets []Target `ignored:"true"`

	// LookupEnv reads the variables the targets file names for its secrets
	// (token_env, password_env, …); nil means os.LookupEnv. Tests set it,
	// so they need not touch the process environment.
	LookupEnv func(string) (string, bool) `ignored:"true"`

	// Now is the bot's clock (plan expiry, leases, the store's times); nil
	// means time.Now. Not read from the environment: tests set it.
	Now func() time.Time `ignored:"true"`
}

// Defaults returns a Config holding every default FromEnv applies to an
// unset variable, and nothing else: the start of a Config built in code.
// (TestDefaultsMatchTags keeps it equal to the tags.)
func Defaults() Config {
	return Config{
		SlackAPIURL:          "https://slack.com/api/",
		GeminiDBBatchEngines: []string{"cassandra", "influxdb"},
		ConfirmTTL:           15 * time.Minute,
		PollInterval:         30 * time.Second,
		FollowFor:            6 * time.Hour,
		CommandsPerMin:       10,
		MaxOpenPlans:         3,
		Store:                "geminidb-patch.db",
		HTTPAddr:             ":8080",
		ShutdownTimeout:      30 * time.Second,
		Retention:            2160 * time.Hour,
		MaxInstances:         200,
		FleetGuard:           10,
		Workers:              32,
		QueueSize:            1000,
		PollConcurrency:      32,
		LogLevel:             "info",
		LogFormat:            "json",
	}
}

// FromEnv reads the process environment with envconfig.Process and
// validates the result. The error, if any, is a Problems listing every
// missing or bad variable and every problem of the targets file.
//
// An empty variable is set, not unset (envconfig's rule): it gets no
// default, and the problem says so.
func FromEnv() (Config, error) {
	var c Config
	problems := readEnv(&c)
	if err := c.Validate(); err != nil {
		// A variable that could not be read is not checked again: its
		// zero value would only repeat the problem in other words.
		var vp Problems
		errors.As(err, &vp)
		for _, p := range vp {
			if !problems.names(p) {
				problems = append(problems, p)
			}
		}
	}
	if len(problems) > 0 {
		return Config{}, problems
	}
	return c, nil
}

// readEnv fills c with envconfig.Process, one field at a time: Process
// stops at the first missing or unparsable variable, and every one of them
// is to be reported. Each field is processed through a struct holding only
// that field, with its tags, so envconfig alone reads, parses and defaults.
func readEnv(c *Config) Problems {
	var problems Problems
	v := reflect.ValueOf(c).Elem()
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		key := f.Tag.Get("envconfig")
		if key == "" || f.Tag.Get("ignored") == "true" {
			continue
		}
		one := reflect.New(reflect.StructOf([]reflect.StructField{{Name: f.Name, Type: f.Type, Tag: f.Tag}}))
		if err := envconfig.Process("", one.Interface()); err != nil {
			problems = append(problems, readProblem(key, f, err))
			continue
		}
		v.Field(i).Set(one.Elem().Field(0))
	}
	return problems
}

// readProblem says what is wrong with a variable envconfig could not read,
// without its value (envconfig's own message repeats it).
func readProblem(key string, f reflect.StructField, err error) *VarError {
	var pe *envconfig.ParseError
	if !errors.As(err, &pe) {
		return &VarError{Variable: key, Problem: "is required but not set"}
	}
	if v, _ := os.LookupEnv(key); v == "" {
		if def := f.Tag.Get("default"); def != "" {
			return &VarError{Variable: key, Problem: "is set but empty; unset it to use the default " + def}
		}
		return &VarError{Variable: key, Problem: "is set but empty"}
	}
	switch f.Type {
	case reflect.TypeFor[time.Duration]():
		return &VarError{Variable: key, Problem: "must be a duration such as 30s, 15m or 6h"}
	case reflect.TypeFor[int]():
		return &VarError{Variable: key, Problem: "must be a whole number"}
	}
	return &VarError{Variable: key, Problem: "cannot be read as " + f.Type.String()}
}

// Usage writes the table of variables (name, type, default, required,
// description) that `--help env` prints, with envconfig.Usagef.
func Usage(w io.Writer) error {
	tabs := tabwriter.NewWriter(w, 1, 0, 2, ' ', 0)
	if err := envconfig.Usagef("", &Config{}, tabs, envconfig.DefaultTableFormat); err != nil {
		return fmt.Errorf("usage: %w", err)
	}
	return tabs.Flush()
}

// lookupEnv is c.LookupEnv, or the process environment.
func (c *Config) lookupEnv(name string) (string, bool) {
	if c.LookupEnv != nil {
		return c.LookupEnv(name)
	}
	return os.LookupEnv(name)
}

// MapLookup is a LookupEnv over a fixed set of variables.
func MapLookup(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}
}

// names reports whether the problems already name the variable p names.
func (ps Problems) names(p error) bool {
	var ve *VarError
	if !errors.As(p, &ve) {
		return false
	}
	for _, q := range ps {
		var qe *VarError
		if errors.As(q, &qe) && strings.Contains(ve.Variable, qe.Variable) {
			return true
		}
	}
	return false
}
