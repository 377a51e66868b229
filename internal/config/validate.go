package config

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// AuthMode names the GeminiDB authentication a target uses.
type AuthMode string

// The GeminiDB authentication modes.
const (
	AuthToken AuthMode = "token"
	AuthIAM   AuthMode = "iam"
	AuthAKSK  AuthMode = "aksk"
)

// Validate checks every setting, tidies lists and URLs (trimmed, Slack's
// base URL ending in /), and reads the targets: BOT_TARGETS_FILE, or the
// one target the GEMINIDB_* variables define, into c.Targets. It returns
// nil, or a Problems with every problem found.
func (c *Config) Validate() error {
	var ps Problems
	bad := func(v, p string) { ps = append(ps, &VarError{Variable: v, Problem: p}) }
	switch {
	case !c.SlackAppToken.Set():
		bad("SLACK_APP_TOKEN", "is required but not set")
	case !strings.HasPrefix(c.SlackAppToken.Reveal(), "xapp-"):
		bad("SLACK_APP_TOKEN", "must be an app-level token starting with xapp-")
	}
	switch {
	case !c.SlackBotToken.Set():
		bad("SLACK_BOT_TOKEN", "is required but not set")
	case !strings.HasPrefix(c.SlackBotToken.Reveal(), "xoxb-"):
		bad("SLACK_BOT_TOKEN", "must be a bot token starting with xoxb-")
	}
	if err := checkURL(c.SlackAPIURL); err != nil {
		bad("SLACK_API_URL", err.Error())
	} else if !strings.HasSuffix(c.SlackAPIURL, "/") {
		c.SlackAPIURL += "/"
	}
	ps = append(ps, c.validateGeminiDB()...)
	if strings.ContainsAny(c.GeminiDBRegion, "/?#&%{} ") {
		bad("GEMINIDB_REGION", "must be a region name such as eu-de")
	}
	if c.ConsoleURL != "" {
		if err := checkConsoleURL(c.ConsoleURL); err != nil {
			bad("BOT_CONSOLE_URL", err.Error())
		}
	}
	c.AllowedUsers = cleanList(c.AllowedUsers)
	if len(c.AllowedUsers) == 0 {
		bad("BOT_ALLOWED_USERS", "is required: list the Slack user IDs (U…) or user-group IDs (S…) allowed to patch, or * for everyone")
	}
	for _, u := range c.AllowedUsers {
		if u != "*" && !isSlackID(u, "UWS") {
			bad("BOT_ALLOWED_USERS", fmt.Sprintf("%q is not a Slack user ID (U…/W…), user-group ID (S…) or *", u))
		}
	}
	c.AllowedChannels = cleanList(c.AllowedChannels)
	for _, ch := range c.AllowedChannels {
		if !isSlackID(ch, "CGD") {
			bad("BOT_ALLOWED_CHANNELS", fmt.Sprintf("%q is not a Slack channel ID (C…/G…)", ch))
		}
	}
	c.Approvers = cleanList(c.Approvers)
	for _, u := range c.Approvers {
		if !isSlackID(u, "UWS") {
			bad("BOT_APPROVERS", fmt.Sprintf("%q is not a Slack user ID (U…/W…) or user-group ID (S…)", u))
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"BOT_CONFIRM_TTL", c.ConfirmTTL}, {"BOT_POLL_INTERVAL", c.PollInterval}, {"BOT_FOLLOW_FOR", c.FollowFor}, {"BOT_SHUTDOWN_TIMEOUT", c.ShutdownTimeout}} {
		if d.v <= 0 {
			bad(d.name, "must be a positive duration such as 30s or 15m")
		}
	}
	if c.ConfirmTTL > 30*time.Minute {
		bad("BOT_CONFIRM_TTL", "must be at most 30m: Slack's response URLs, which update the plan message, last 30 minutes")
	}
	if c.Canary < 0 || c.Canary > 10 {
		bad("BOT_CANARY", "must be a number from 0 (no canary) to 10")
	}
	switch {
	case c.Retention <= 0:
		bad("BOT_RETENTION", "must be a positive duration such as 2160h (90 days)")
	case c.FollowFor > 0 && c.Retention <= c.FollowFor:
		bad("BOT_RETENTION", fmt.Sprintf("must be longer than BOT_FOLLOW_FOR (%s): a request is kept at least as long as its jobs are followed", c.FollowFor))
	}
	for _, n := range []struct {
		name string
		v    int
	}{{"BOT_COMMANDS_PER_MINUTE", c.CommandsPerMin}, {"BOT_MAX_OPEN_PLANS", c.MaxOpenPlans}, {"BOT_WORKERS", c.Workers}, {"BOT_QUEUE_SIZE", c.QueueSize}, {"BOT_POLL_CONCURRENCY", c.PollConcurrency}, {"BOT_MAX_INSTANCES", c.MaxInstances}, {"BOT_FLEET_GUARD", c.FleetGuard}} {
		if n.v <= 0 {
			bad(n.name, "must be a positive number")
		}
	}
	if strings.TrimSpace(c.Store) == "" {
		bad("BOT_STORE", "must be a file path")
	} else if strings.Contains(c.Store, "://") {
		if u, err := url.Parse(c.Store); err != nil || !IsRedisURL(c.Store) || u.Host == "" {
			bad("BOT_STORE", "must be a file path or a redis://host:port/db (or rediss://) URL")
		}
	}
	if strings.TrimSpace(c.HTTPAddr) == "" {
		bad("BOT_HTTP_ADDR", "must be an address such as :8080")
	}
	if _, err := zerolog.ParseLevel(strings.ToLower(c.LogLevel)); err != nil || c.LogLevel == "" {
		bad("LOG_LEVEL", "must be one of trace, debug, info, warn, error")
	}
	if c.LogFormat != "json" && c.LogFormat != "console" {
		bad("LOG_FORMAT", "must be json or console")
	}
	targets, tps := c.loadTargets()
	ps = append(ps, tps...)
	if len(ps) > 0 {
		return ps
	}
	c.Targets = targets
	return nil
}

// IsRedisURL reports whether BOT_STORE names a Redis server rather than a file.
func IsRedisURL(s string) bool {
	return strings.HasPrefix(s, "redis://") || strings.HasPrefix(s, "rediss://")
}

// validateGeminiDB checks the GEMINIDB_* variables: they define the one
// target unless BOT_TARGETS_FILE names a file of targets, and then they
// must not define one too.
func (c *Config) validateGeminiDB() Problems {
	var ps Problems
	bad := func(v, p string) { ps = append(ps, &VarError{Variable: v, Problem: p}) }
	if c.TargetsFile != "" {
		if c.GeminiDBEndpoint != "" || c.GeminiDBProjectID != "" {
			bad("BOT_TARGETS_FILE, GEMINIDB_ENDPOINT, GEMINIDB_PROJECT_ID", "set either BOT_TARGETS_FILE (several targets) or GEMINIDB_ENDPOINT and GEMINIDB_PROJECT_ID (one target), not both")
		}
		return ps
	}
	switch {
	case strings.TrimSpace(c.GeminiDBEndpoint) == "":
		bad("GEMINIDB_ENDPOINT", "is required but not set (or set BOT_TARGETS_FILE to a file of targets)")
	case checkURL(c.GeminiDBEndpoint) != nil:
		bad("GEMINIDB_ENDPOINT", checkURL(c.GeminiDBEndpoint).Error())
	default:
		c.GeminiDBEndpoint = strings.TrimRight(c.GeminiDBEndpoint, "/")
	}
	switch {
	case strings.TrimSpace(c.GeminiDBProjectID) == "":
		bad("GEMINIDB_PROJECT_ID", "is required but not set (or set BOT_TARGETS_FILE to a file of targets)")
	case strings.ContainsAny(c.GeminiDBProjectID, "/?# "):
		bad("GEMINIDB_PROJECT_ID", "must be a project ID (no spaces or slashes)")
	}
	if engines, ok := cleanEngines(c.GeminiDBBatchEngines); ok {
		c.GeminiDBBatchEngines = engines
	} else {
		bad("GEMINIDB_BATCH_ENGINES", "must name at least one engine, e.g. cassandra,influxdb")
	}
	if _, err := c.AuthMode(); err != nil {
		ps = append(ps, err)
	}
	return ps
}

// AuthMode returns the one GeminiDB authentication mode the GEMINIDB_*
// variables select. Setting none, two, or only part of one is a *VarError
// naming the variables.
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
			return "", &VarError{"GEMINIDB_ACCESS_KEY", "must be set together with GEMINIDB_SECRET_KEY"}
		}
		if !c.GeminiDBSecretKey.Set() {
			return "", &VarError{"GEMINIDB_SECRET_KEY", "must be set together with GEMINIDB_ACCESS_KEY"}
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
				return "", &VarError{name, "must be set for IAM password login (GEMINIDB_IAM_ENDPOINT, _USERNAME, _PASSWORD, _DOMAIN go together)"}
			}
		}
		if err := checkURL(c.GeminiDBIAMEndpoint); err != nil {
			return "", &VarError{"GEMINIDB_IAM_ENDPOINT", err.Error()}
		}
		modes, names = append(modes, AuthIAM), append(names, "GEMINIDB_IAM_*")
	}
	switch len(modes) {
	case 0:
		return "", &VarError{"GEMINIDB_AUTH_TOKEN", "no GeminiDB authentication is set: set GEMINIDB_AUTH_TOKEN, or GEMINIDB_ACCESS_KEY and GEMINIDB_SECRET_KEY, or the GEMINIDB_IAM_* variables"}
	case 1:
		return modes[0], nil
	default:
		return "", &VarError{strings.Join(names, ", "), "set only one GeminiDB authentication mode"}
	}
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
		if errors.Is(err, errUserinfo) {
			return errors.New("must not contain a user name or password: the link is shown in Slack")
		}
		return errors.New("must be an http(s) URL template such as https://console.example.com/nosql/?region={region}#/instances/{instance_id}")
	}
	return nil
}

// errUserinfo is checkURL's answer to credentials in a URL.
var errUserinfo = errors.New("must not contain a user name or password (user:pw@): credentials go in their own variables or the auth section, never in a URL")

// checkURL checks an http(s) URL with a host and without user info: no
// endpoint of the bot takes credentials in its URL, and a URL is logged.
func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		if strings.Contains(hostPart(raw), "@") {
			return errUserinfo
		}
		return errors.New("must be an http(s) URL such as https://host")
	}
	if u.User != nil {
		return errUserinfo
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

// cleanEngines trims and lowercases engine names; ok is false when none is left.
func cleanEngines(in []string) ([]string, bool) {
	engines := cleanList(in)
	for i, e := range engines {
		engines[i] = strings.ToLower(e)
	}
	return engines, len(engines) > 0
}

// isSlackID reports whether s has the shape of a Slack ID starting with
// one of prefixes (U, W, S for people and groups; C, G, D for channels).
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
