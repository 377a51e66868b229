package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	berrors "go.etcd.io/bbolt/errors"
	"gopkg.in/yaml.v3"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/config"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// doctorTimeout bounds each check so a hanging endpoint cannot hang doctor.
const doctorTimeout = 20 * time.Second

// manifestYAML is the app manifest people install (manifest.yml): doctor
// checks the bot token has every scope it asks for.
//
//go:embed manifest.yml
var manifestYAML []byte

// doctor checks what the bot needs and prints one PASS/FAIL line per check,
// each failure followed by its fix (README.md, Troubleshooting). Its exit
// status is 0 only when every check passed.
func doctor(ctx context.Context, loadConfig func() (config.Config, error), out io.Writer) int {
	// go-redis logs dial failures to stderr by itself; the check's line says it.
	redis.SetLogger(redisLog{zerolog.Nop()})
	failed, redisStore := false, false
	report := func(name string, err error, ok string) {
		if err != nil {
			failed = true
			lines := strings.Split(err.Error(), "\n")
			fmt.Fprintf(out, "FAIL  %-20s %s\n", name, lines[0])
			for _, l := range lines[1:] {
				fmt.Fprintf(out, "      %-20s %s\n", "", l)
			}
			if f := fixFor(name, err, redisStore); f != "" {
				fmt.Fprintf(out, "      %-20s fix: %s\n", "", f)
			}
			return
		}
		fmt.Fprintf(out, "PASS  %-20s %s\n", name, ok)
	}
	cfg, err := loadConfig()
	if err != nil {
		report("configuration", err, "")
		fmt.Fprintln(out, "Fix the configuration first; the other checks need it.")
		return exitFailed
	}
	report("configuration", nil, fmt.Sprintf("%s; store: %s", cfg.TargetsSummary(), config.RedactURL(cfg.Store)))
	redisStore = config.IsRedisURL(cfg.Store)

	check := func(name string, f func(context.Context) (string, error)) {
		cctx, cancel := context.WithTimeout(ctx, doctorTimeout)
		defer cancel()
		ok, err := f(cctx)
		report(name, err, ok)
	}
	api := NewSlack(cfg)
	check("slack auth.test", func(ctx context.Context) (string, error) {
		res, err := api.AuthTestContext(ctx)
		if err != nil {
			return "", fmt.Errorf("SLACK_BOT_TOKEN refused or Slack unreachable: %w", err)
		}
		return fmt.Sprintf("bot %s in team %s", res.User, res.Team), nil
	})
	if !failed {
		// Only a token Slack accepts has scopes to compare.
		check("slack scopes", func(ctx context.Context) (string, error) { return checkScopes(ctx, cfg) })
	}
	check("slack socket mode", func(ctx context.Context) (string, error) {
		_, wsURL, err := api.StartSocketModeContext(ctx)
		if err != nil {
			return "", fmt.Errorf("cannot open a Socket Mode connection (SLACK_APP_TOKEN needs connections:write, Socket Mode must be on): %w", err)
		}
		if err := socketHello(ctx, wsURL); err != nil {
			return "", fmt.Errorf("apps.connections.open works but the WebSocket did not open (a proxy or firewall blocking wss://?): %w", err)
		}
		return "apps.connections.open works and the WebSocket said hello", nil
	})
	// Every target on its own: its own credentials, endpoint and project.
	for _, t := range cfg.Targets {
		check("geminidb "+t.Name, func(ctx context.Context) (string, error) {
			db, err := NewGeminiDB(t, nil)
			if err != nil {
				return "", err
			}
			page, err := db.ListInstances(ctx, upgrade.ListOptions{Limit: 1})
			if err != nil {
				return "", err
			}
			where := "project " + t.ProjectID
			if t.Region != "" {
				where += " in " + t.Region
			}
			return fmt.Sprintf("authenticated (%s); %d instances in %s", t.Auth.Mode, page.TotalCount, where), nil
		})
	}
	check("store", func(ctx context.Context) (string, error) { return checkStore(ctx, cfg.Store) })
	if config.IsRedisURL(cfg.Store) {
		cctx, cancel := context.WithTimeout(ctx, doctorTimeout)
		for _, w := range redisWarnings(cctx, cfg.Store) {
			fmt.Fprintf(out, "WARN  %-20s %s\n", "redis durability", w)
		}
		if line := replicasLine(cctx, cfg.Store); line != "" {
			fmt.Fprintln(out, line)
		}
		cancel()
	}
	if failed {
		return exitFailed
	}
	return exitOK
}

// socketHello dials a Socket Mode WebSocket URL, waits for Slack's hello and
// closes the connection at once. A running bot shares envelopes with this
// connection for that instant; Slack redelivers any it does not ack.
func socketHello(ctx context.Context, wsURL string) error {
	conn, res, err := websocket.DefaultDialer.DialContext(ctx, wsURL, nil)
	if res != nil && res.Body != nil {
		_ = res.Body.Close()
	}
	if err != nil {
		// The error never repeats the URL, whose ticket is a credential.
		return fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Now()) })
	defer stop()
	for {
		var msg struct {
			Type string `json:"type"`
		}
		if err := conn.ReadJSON(&msg); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("no hello: %w", ctx.Err())
			}
			return fmt.Errorf("no hello: %w", err)
		}
		if msg.Type == "hello" {
			deadline := time.Now().Add(time.Second)
			_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "doctor done"), deadline)
			return nil
		}
	}
}

// checkStore checks BOT_STORE: a Redis store must answer; an existing file
// is opened (which also checks it is not damaged); when there is no file
// yet, doctor checks that it can be created.
func checkStore(ctx context.Context, target string) (string, error) {
	if isRedisURL(target) {
		st, err := store.OpenRedis(ctx, target)
		if err != nil {
			return "", err
		}
		defer st.Close()
		return fmt.Sprintf("%s answers", st.Path()), nil
	}
	if _, err := os.Stat(target); errors.Is(err, os.ErrNotExist) {
		dir := filepath.Dir(target)
		f, err := os.CreateTemp(dir, ".doctor-*")
		if err != nil {
			return "", fmt.Errorf("cannot create %s: %w", target, err)
		}
		name := f.Name()
		_ = f.Close()
		_ = os.Remove(name)
		return fmt.Sprintf("%s does not exist yet and can be created", target), nil
	}
	st, err := store.Open(target)
	if errors.Is(err, berrors.ErrTimeout) {
		// bbolt lets one process at a time hold the file: doctor run beside
		// the bot (docker exec, kubectl exec) cannot open it, and need not.
		return fmt.Sprintf("%s is in use by another process, normally the running bot (a bbolt file is held by one process at a time, and doctor waited %v for it): "+
			"the bot checked the file when it opened it and /readyz reports whether the store answers; stop the bot to have doctor check the file itself", target, store.DefaultLockTimeout), nil
	}
	if err != nil {
		return "", err
	}
	if err := st.Close(); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s opens and is consistent", target), nil
}

// redisWarnings checks what the store needs from a Redis server and says
// what is missing: persistence (a restart of Redis must not forget the
// requests and the jobs being followed) and maxmemory-policy noeviction (an
// evicted request or claim could let a patch be sent twice). Warnings do
// not fail doctor: a managed Redis may be durable without saying so.
func redisWarnings(ctx context.Context, target string) []string {
	rdb, err := store.NewRedisClient(target) // a Sentinel URL too
	if err != nil {
		return []string{"cannot parse BOT_STORE as a Redis URL"}
	}
	defer rdb.Close()
	conf, err := rdb.ConfigGet(ctx, "*").Result()
	if err != nil {
		return []string{fmt.Sprintf("cannot read the server's CONFIG (%v); make sure persistence is on (appendonly yes, or RDB save points) and maxmemory-policy is noeviction", err)}
	}
	var warns []string
	if conf["appendonly"] != "yes" && strings.TrimSpace(conf["save"]) == "" {
		warns = append(warns, "persistence is off (appendonly no, no save points): a Redis restart loses every request and the jobs being followed; set appendonly yes")
	}
	if p := conf["maxmemory-policy"]; p != "" && p != "noeviction" {
		warns = append(warns, fmt.Sprintf("maxmemory-policy is %s: Redis may evict requests or claims under memory pressure; set it to noeviction", p))
	}
	return warns
}

// errMissingScopes is a bot token without every scope of the manifest.
type errMissingScopes struct{ missing []string }

func (e *errMissingScopes) Error() string {
	return fmt.Sprintf("the bot token lacks %s (manifest.yml asks for it)", strings.Join(e.missing, ", "))
}

// manifestScopes are the bot scopes manifest.yml asks for.
func manifestScopes() ([]string, error) {
	var m struct {
		OAuth struct {
			Scopes struct {
				Bot []string `yaml:"bot"`
			} `yaml:"scopes"`
		} `yaml:"oauth_config"`
	}
	if err := yaml.Unmarshal(manifestYAML, &m); err != nil {
		return nil, fmt.Errorf("read the embedded manifest.yml: %w", err)
	}
	return m.OAuth.Scopes.Bot, nil
}

// checkScopes compares the bot token's scopes, which Slack's auth.test
// answers in its X-OAuth-Scopes header, with the manifest's.
func checkScopes(ctx context.Context, cfg config.Config) (string, error) {
	want, err := manifestScopes()
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cfg.SlackAPIURL+"auth.test", nil)
	if err != nil {
		return "", fmt.Errorf("auth.test: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+cfg.SlackBotToken.Reveal())
	res, err := (&http.Client{Timeout: doctorTimeout}).Do(req)
	if err != nil {
		// *url.Error names the URL, which carries no credential here.
		return "", fmt.Errorf("auth.test: %w", err)
	}
	_ = res.Body.Close()
	header, ok := res.Header["X-Oauth-Scopes"]
	if !ok {
		return "", fmt.Errorf("auth.test answered %s without an X-OAuth-Scopes header; cannot tell the token's scopes", res.Status)
	}
	have := map[string]bool{}
	for _, h := range header {
		for _, s := range strings.Split(h, ",") {
			have[strings.TrimSpace(s)] = true
		}
	}
	var missing []string
	for _, s := range want {
		if !have[s] {
			missing = append(missing, s)
		}
	}
	if len(missing) > 0 {
		return "", &errMissingScopes{missing: missing}
	}
	return "the bot token has every scope manifest.yml asks for: " + strings.Join(want, ", "), nil
}

// fixFor is what to do about a failed check, from README.md's
// Troubleshooting table; "" when there is nothing more to say than the
// error itself.
func fixFor(check string, err error, redisStore bool) string {
	var api *upgrade.APIError
	var scopes *errMissingScopes
	switch {
	case errors.As(err, &scopes):
		return "add the missing scopes to the app (api.slack.com/apps → OAuth & Permissions, or paste manifest.yml) and reinstall it to the workspace"
	case check == "configuration":
		return "each line names the variable, or the file, target, field and line; `geminidb-patch-bot --help env` lists every variable"
	case errors.As(err, &api) && (api.Code == "APIG.0301" || api.Code == "APIG.0307"):
		return "the GeminiDB token is invalid or expired: renew GEMINIDB_AUTH_TOKEN (or the target's token), or use IAM login (renewed automatically)"
	case errors.As(err, &api) && slices.Contains([]int{http.StatusUnauthorized, http.StatusForbidden}, api.Status):
		return "GeminiDB refused the credentials: check the access key and secret key, or the IAM user's password, domain and permissions"
	case check == "slack auth.test":
		return "SLACK_BOT_TOKEN is wrong or revoked: copy the Bot User OAuth Token (xoxb-…) from the app's OAuth & Permissions page, and check SLACK_API_URL"
	case check == "slack socket mode":
		return "regenerate the app-level token (SLACK_APP_TOKEN, xapp-…) with connections:write, and turn Socket Mode on for the app"
	case strings.HasPrefix(check, "geminidb"):
		return "check the endpoint and project ID (GEMINIDB_* or the targets file), and that this host can reach the endpoint"
	case check == "store" && redisStore:
		return "check BOT_STORE's host, port and password, and that the Redis server answers from this host"
	case check == "store" && (errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission)):
		return "create the directory of BOT_STORE, or point BOT_STORE at a writable path"
	case check == "store":
		return "a damaged store is never replaced: move it aside (keep it for the record) and start again; if another bot process holds it, stop that one"
	}
	return ""
}
