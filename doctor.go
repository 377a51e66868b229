package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// doctorTimeout bounds each check so a hanging endpoint cannot hang doctor.
const doctorTimeout = 20 * time.Second

// doctor checks what the bot needs and prints one PASS/FAIL line per check.
// Its exit status is 0 only when every check passed.
func doctor(ctx context.Context, lookup func(string) (string, bool), out io.Writer) int {
	// go-redis logs dial failures to stderr by itself; the check's line says it.
	redis.SetLogger(redisLog{zerolog.Nop()})
	failed := false
	report := func(name string, err error, ok string) {
		if err != nil {
			failed = true
			fmt.Fprintf(out, "FAIL  %-20s %v\n", name, err)
			return
		}
		fmt.Fprintf(out, "PASS  %-20s %s\n", name, ok)
	}
	cfg, err := LoadConfig(lookup)
	if err != nil {
		report("configuration", err, "")
		fmt.Fprintln(out, "Fix the configuration first; the other checks need it.")
		return exitFailed
	}
	report("configuration", nil, fmt.Sprintf("%s; store: %s", targetsSummary(cfg), redactURL(cfg.Store)))

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
	if isRedisURL(cfg.Store) {
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
	opts, err := redis.ParseURL(target)
	if err != nil {
		return []string{"cannot parse BOT_STORE as a Redis URL"}
	}
	rdb := redis.NewClient(opts)
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
