package config

import (
	"fmt"
	"strings"
)

// RedactURL returns raw without its user info (`https://user:pw@host/…`
// becomes `https://[redacted]@host/…`), for logs and doctor's output. It
// works on text, so a URL template or an unparsable URL is redacted too; a
// string without "://" (a file path) is returned as it is. The query of a
// Redis URL is dropped as well (it may carry a password).
func RedactURL(raw string) string {
	i := strings.Index(raw, "://")
	if i < 0 {
		return raw
	}
	host := hostPart(raw)
	start := i + 3
	rest := raw[start+len(host):]
	if at := strings.LastIndexByte(host, '@'); at >= 0 {
		host = "[redacted]@" + host[at+1:]
	}
	if IsRedisURL(raw) {
		if q := strings.IndexAny(rest, "?#"); q >= 0 {
			rest = rest[:q]
		}
	}
	return raw[:start] + host + rest
}

// hostPart is the authority of a URL: what follows "scheme://" up to the
// path, query or fragment ("" without "://").
func hostPart(raw string) string {
	i := strings.Index(raw, "://")
	if i < 0 {
		return ""
	}
	rest := raw[i+3:]
	if end := strings.IndexAny(rest, "/?#"); end >= 0 {
		rest = rest[:end]
	}
	return rest
}

// LogValue returns the effective configuration for the start-up log line:
// secrets only as set or not, every URL without its user info.
func (c *Config) LogValue() map[string]any {
	mode, _ := c.AuthMode()
	if c.TargetsFile != "" {
		mode = ""
	}
	return map[string]any{
		"slack_api_url": RedactURL(c.SlackAPIURL), "geminidb_endpoint": RedactURL(c.GeminiDBEndpoint),
		"geminidb_project_id": c.GeminiDBProjectID, "batch_engines": c.GeminiDBBatchEngines,
		"auth_mode": string(mode), "iam_endpoint": RedactURL(c.GeminiDBIAMEndpoint),
		"allowed_users": c.AllowedUsers, "allowed_channels": c.AllowedChannels, "approvers": c.Approvers,
		"confirm_ttl": c.ConfirmTTL.String(), "poll_interval": c.PollInterval.String(),
		"follow_for": c.FollowFor.String(), "store": RedactURL(c.Store), "http_addr": c.HTTPAddr, "pprof": c.Pprof,
		"commands_per_minute": c.CommandsPerMin, "max_open_plans": c.MaxOpenPlans,
		"retention": c.Retention.String(), "canary": c.Canary, "workers": c.Workers, "queue_size": c.QueueSize, "poll_concurrency": c.PollConcurrency,
		"geminidb_region": c.GeminiDBRegion, "console_url": RedactURL(c.ConsoleURL),
		"targets_file": c.TargetsFile, "targets": targetsLogValue(c.Targets),
	}
}

// targetsLogValue describes the targets for the start-up log line: where
// their secrets come from, never the secrets.
func targetsLogValue(ts []Target) []map[string]any {
	out := make([]map[string]any, len(ts))
	for i, t := range ts {
		out[i] = map[string]any{
			"name": t.Name, "region": t.Region, "endpoint": RedactURL(t.Endpoint), "project_id": t.ProjectID,
			"batch_engines": t.BatchEngines, "auth_mode": string(t.Auth.Mode), "secrets_from": t.Auth.From,
			"iam_endpoint": RedactURL(t.Auth.IAMEndpoint), "channels": t.Channels, "approvers": t.Approvers,
			"allowed_channels": t.AllowedChannels, "allowed_users": t.AllowedUsers,
		}
	}
	return out
}

// TargetsSummary is doctor's line about the targets: their names and auth
// modes, never their secrets.
func (c *Config) TargetsSummary() string {
	if c.TargetsFile == "" && len(c.Targets) == 1 {
		return "GeminiDB auth: " + string(c.Targets[0].Auth.Mode)
	}
	parts := make([]string, len(c.Targets))
	for i, t := range c.Targets {
		parts[i] = fmt.Sprintf("%s (%s)", t.Label(), t.Auth.Mode)
	}
	return fmt.Sprintf("%d GeminiDB targets from %s: %s", len(c.Targets), c.TargetsFile, strings.Join(parts, ", "))
}
