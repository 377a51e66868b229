// Command geminidb-patch-bot is a Slack bot (Socket Mode) that patches
// GeminiDB Cassandra and Influx instances in batches, safely, from Slack.
//
//	geminidb-patch-bot           run the bot (configured by environment variables)
//	geminidb-patch-bot demo      try the bot: an embedded Slack and GeminiDB, and a local page
//	geminidb-patch-bot doctor    check the configuration, Slack, GeminiDB and the store
//	geminidb-patch-bot version   print the version
//	geminidb-patch-bot healthcheck   GET /healthz of a running bot (for Docker's HEALTHCHECK)
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/bot"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/commands"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/demo"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/config"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/ops"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// version is stamped at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

// Exit statuses.
const (
	exitOK     = 0
	exitFailed = 1
	exitConfig = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	go func() {
		// After the first signal, restore the default handling: the bot
		// shuts down gracefully, and a second Ctrl-C kills it at once.
		<-ctx.Done()
		stop()
	}()
	code := run(ctx, os.Args[1:], processEnviron, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// environ is what run reads besides its arguments: main passes the
// process's own (processEnviron), tests their own, so they need not touch
// the process environment and run side by side.
type environ struct {
	// config reads and validates the configuration: config.FromEnv in main.
	config func() (config.Config, error)
	// lookup reads one variable, for the subcommands that need only one
	// (compact: BOT_STORE, healthcheck: BOT_HTTP_ADDR).
	lookup func(string) (string, bool)
}

// processEnviron is the environment of the process.
var processEnviron = environ{config: config.FromEnv, lookup: os.LookupEnv}

// subcommands are what run does besides running the bot, for --help.
var subcommands = []struct{ name, does string }{
	{"", "run the bot (configured by environment variables; --help env lists them)"},
	{"demo", "try the bot: an embedded Slack and GeminiDB, and a local page (no accounts needed)"},
	{"doctor", "check the configuration, Slack (token, scopes, Socket Mode), GeminiDB and the store, with the fix for each failure"},
	{"version", "print the version"},
	{"compact [DST]", "copy the bbolt store without its free pages (the bot stopped)"},
	{"healthcheck", "GET /healthz of a running bot (for Docker's HEALTHCHECK)"},
	{"--help env", "list the environment variables, their defaults and what they mean"},
}

// usage writes the one-line-per-subcommand help.
func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: geminidb-patch-bot [command]")
	fmt.Fprintln(w)
	for _, c := range subcommands {
		name := c.name
		if name == "" {
			name = "(none)"
		}
		fmt.Fprintf(w, "  %-14s %s\n", name, c.does)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Configuration is read from the environment; see README.md.")
}

// run is the whole program minus process concerns, so tests run exactly
// what users run.
func run(ctx context.Context, args []string, env environ, stdout, stderr io.Writer) int {
	sub := ""
	if len(args) > 0 {
		sub = args[0]
	}
	switch sub {
	case "":
	case "version", "--version":
		fmt.Fprintln(stdout, "geminidb-patch-bot", version)
		return exitOK
	case "demo":
		// The real bot, as run below, against the demo's fakes.
		return demo.Main(ctx, args[1:], stdout, stderr, func(ctx context.Context, cfg config.Config, logs io.Writer) int {
			return serve(ctx, cfg, logs)
		})
	case "doctor":
		return doctor(ctx, env.config, stdout)
	case "healthcheck":
		return healthcheck(ctx, env.lookup, stderr)
	case "compact":
		return compact(args[1:], env.lookup, stdout, stderr)
	case "help", "-h", "--help":
		if len(args) > 1 && args[1] == "env" {
			if err := config.Usage(stdout); err != nil {
				fmt.Fprintf(stderr, "geminidb-patch-bot: %v\n", err)
				return exitFailed
			}
			return exitOK
		}
		usage(stdout)
		return exitOK
	default:
		fmt.Fprintf(stderr, "unknown argument %q\n", sub)
		usage(stderr)
		return exitConfig
	}
	cfg, err := env.config()
	if err != nil {
		printConfigError(stderr, err)
		return exitConfig
	}
	return start(ctx, cfg, stderr)
}

// printConfigError writes every configuration problem on a line of its own.
func printConfigError(w io.Writer, err error) {
	for _, line := range strings.Split(err.Error(), "\n") {
		fmt.Fprintf(w, "geminidb-patch-bot: configuration error: %s\n", line)
	}
}

// serve validates cfg, a Config built in code (the demo's), and runs the
// bot on it as run does.
func serve(ctx context.Context, cfg config.Config, stderr io.Writer) int {
	if err := cfg.Validate(); err != nil {
		printConfigError(stderr, err)
		return exitConfig
	}
	return start(ctx, cfg, stderr)
}

// start runs the bot on a validated configuration until ctx ends.
func start(ctx context.Context, cfg config.Config, stderr io.Writer) int {
	m, err := NewMain(cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "geminidb-patch-bot: %v\n", err)
		return exitFailed
	}
	err = m.Run(ctx)
	if cerr := m.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		m.Log.Error().Err(err).Msg("stopped with an error")
		return exitFailed
	}
	m.Log.Info().Msg("stopped")
	return exitOK
}

// Main is the wired program: configuration, logger, store, clients, bot
// and the operational HTTP server.
type Main struct {
	Config   config.Config
	Log      zerolog.Logger
	Store    Store
	Bot      *bot.Bot
	Registry *prometheus.Registry
	HTTP     *ops.Server
	Slack    *slack.Client
	// GeminiDB has one client per target (Config.Targets, in that order):
	// each has its own credentials, credential breaker and IAM token.
	GeminiDB []*upgrade.Client

	// stopping is set when shutdown begins, so /readyz turns 503 at once
	// and a load balancer stops sending traffic before the socket closes.
	stopping atomic.Bool
	// replicaID names this process in the store's replica registry.
	replicaID    string
	replicaGauge *prometheus.GaugeVec
	// sized counts the targets whose fleet size the start-up call learned
	// (or failed to): tests wait on it instead of on a log line.
	sized atomic.Int64
}

// Store is the bot's durable state: the embedded bbolt file or a Redis
// shared by replicas.
type Store interface {
	bot.Storage
	Ping(ctx context.Context) error
	Close() error
	RollingUpgrades
}

var (
	_ Store = (*store.Bolt)(nil)
	_ Store = (*store.Redis)(nil)
)

// OpenStore opens BOT_STORE: a redis:// or rediss:// URL, or a file path.
func OpenStore(ctx context.Context, target string, now func() time.Time) (Store, error) {
	if isRedisURL(target) {
		return store.OpenRedisWith(ctx, target, store.RedisOptions{Now: now})
	}
	return store.OpenWith(target, store.Options{Now: now})
}

// redisLog routes go-redis's own log lines (reconnects, dial failures)
// through the bot's logger instead of bare stderr.
type redisLog struct{ log zerolog.Logger }

func (l redisLog) Printf(_ context.Context, format string, v ...any) {
	l.log.Warn().Str("component", "redis").Msgf(format, v...)
}

func isRedisURL(s string) bool {
	return strings.HasPrefix(s, "redis://") || strings.HasPrefix(s, "rediss://")
}

// NewLogger builds the zerolog logger the configuration asks for.
func NewLogger(cfg config.Config, w io.Writer) zerolog.Logger {
	level, err := zerolog.ParseLevel(strings.ToLower(cfg.LogLevel))
	if err != nil {
		level = zerolog.InfoLevel
	}
	if cfg.LogFormat == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339}
	}
	return zerolog.New(w).Level(level).With().Timestamp().Str("service", "geminidb-patch-bot").Logger()
}

// NewGeminiDB builds the GeminiDB client of one target, for its auth mode.
func NewGeminiDB(t config.Target, observe func(call string, d time.Duration, err error)) (*upgrade.Client, error) {
	var auth upgrade.Authenticator
	switch t.Auth.Mode {
	case config.AuthToken:
		auth = upgrade.TokenAuth(t.Auth.Token.Reveal())
	case config.AuthAKSK:
		auth = upgrade.AKSKAuth(t.Auth.AccessKey.Reveal(), t.Auth.SecretKey.Reveal())
	case config.AuthIAM:
		auth = upgrade.NewIAMAuth(upgrade.IAMConfig{
			Endpoint: t.Auth.IAMEndpoint, Username: t.Auth.IAMUsername,
			Password: t.Auth.IAMPassword.Reveal(), Domain: t.Auth.IAMDomain, ProjectID: t.ProjectID,
		})
	default:
		return nil, fmt.Errorf("geminidb client of target %s: no authentication mode", t.Name)
	}
	opts := []upgrade.Option{}
	if observe != nil {
		opts = append(opts, upgrade.WithObserver(observe))
	}
	c, err := upgrade.NewClient(t.Endpoint, t.ProjectID, auth, opts...)
	if err != nil {
		return nil, fmt.Errorf("geminidb client of target %s: %w", t.Name, err)
	}
	return c, nil
}

// NewSlack builds the Slack Web API client (bot token, app token for Socket Mode).
func NewSlack(cfg config.Config) *slack.Client {
	return slack.New(cfg.SlackBotToken.Reveal(),
		slack.OptionAppLevelToken(cfg.SlackAppToken.Reveal()),
		slack.OptionAPIURL(cfg.SlackAPIURL),
		// A keep-alive pool of its own (upgrade.NewTransport), not
		// http.DefaultTransport's 2 idle connections per host: a burst of
		// plans posted to response URLs would otherwise open (and, against
		// Slack, TLS-handshake) a connection for most posts.
		slack.OptionHTTPClient(&http.Client{Timeout: 30 * time.Second, Transport: upgrade.NewTransport()}),
		// Slack answers a burst of thread replies with 429 and Retry-After; a
		// 429 means the message was not taken, so retrying it is safe.
		slack.OptionRetry(3))
}

// newTargets builds the bot's targets, each with a client of its own whose
// API calls are observed in metrics under the target's name.
func newTargets(cfg config.Config, metrics *bot.Metrics) ([]bot.Target, []*upgrade.Client, error) {
	var targets []bot.Target
	var dbs []*upgrade.Client
	for _, t := range cfg.Targets {
		db, err := NewGeminiDB(t, func(call string, d time.Duration, err error) {
			result := "ok"
			if err != nil {
				result = "error"
			}
			metrics.APILatency.WithLabelValues(t.Name, call, result).Observe(d.Seconds())
		})
		if err != nil {
			return nil, nil, err
		}
		targets = append(targets, bot.Target{
			Name: t.Name, Region: t.Region, ProjectID: t.ProjectID, BatchEngines: t.BatchEngines,
			Channels: t.Channels, Approvers: t.Approvers, DB: db,
			AllowedChannels: t.AllowedChannels, AllowedUsers: t.AllowedUsers,
		})
		dbs = append(dbs, db)
	}
	return targets, dbs, nil
}

// NewMain wires everything. It opens the store (a damaged store stops the
// bot here) and binds the HTTP address; it does not connect to Slack yet.
func NewMain(cfg config.Config, logOut io.Writer) (*Main, error) {
	if len(cfg.Targets) == 0 {
		return nil, errors.New("the configuration has no targets: call its Validate first")
	}
	log := NewLogger(cfg, logOut)
	log.Info().Str("version", version).Interface("config", cfg.LogValue()).Msg("starting")
	for _, t := range cfg.Targets {
		if len(t.AllowedChannels) > 0 || len(t.AllowedUsers) > 0 {
			// Read and checked, handed to the bot, but the bot does not
			// refuse by them yet: say so rather than let it be relied on.
			log.Warn().Str("target", t.Name).Msg("allowed_channels and allowed_users are not enforced yet; only BOT_ALLOWED_CHANNELS and BOT_ALLOWED_USERS are")
		}
	}

	if isRedisURL(cfg.Store) {
		redis.SetLogger(redisLog{log})
	}
	st, err := OpenStore(context.Background(), cfg.Store, cfg.Now)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", config.RedactURL(cfg.Store), err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := bot.NewMetrics(reg)
	targets, dbs, err := newTargets(cfg, metrics)
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	api := NewSlack(cfg)
	sm := socketmode.New(api)
	b := bot.New(bot.Options{Config: bot.Config{
		Command: commands.Command, Targets: targets,
		AllowedUsers: cfg.AllowedUsers, AllowedChannels: cfg.AllowedChannels,
		ConfirmTTL: cfg.ConfirmTTL, PollInterval: cfg.PollInterval, FollowFor: cfg.FollowFor,
		CommandsPerMin: cfg.CommandsPerMin, MaxOpenPlans: cfg.MaxOpenPlans,
		ConsoleURL: cfg.ConsoleURL, Region: cfg.GeminiDBRegion, ProjectID: cfg.GeminiDBProjectID,
		// A batch call must be answered (or time out and be recorded as
		// unknown) before a shutdown gives up waiting for it.
		BatchTimeout:    cfg.ShutdownTimeout * 3 / 4,
		Now:             cfg.Now,
		Workers:         cfg.Workers,
		QueueSize:       cfg.QueueSize,
		PollConcurrency: cfg.PollConcurrency,
		Retention:       cfg.Retention,
		Canary:          cfg.Canary,
		MaxInstances:    cfg.MaxInstances,
		FleetGuard:      cfg.FleetGuard,
	}, Slack: api, Socket: sm, Store: st, Log: log, Metrics: metrics})

	m := &Main{Config: cfg, Log: log, Store: st, Bot: b, Registry: reg, Slack: api, GeminiDB: dbs,
		replicaID: newReplicaID(), replicaGauge: replicaMetrics(reg)}
	h := ops.Handler(map[string]ops.Check{
		"slack": func(context.Context) error {
			if !b.Connected() {
				return errors.New("socket mode not connected")
			}
			return nil
		},
		"store":    st.Ping,
		"schema":   m.schemaCheck,
		"replicas": m.replicasCheck,
		"shutdown": func(context.Context) error {
			if m.stopping.Load() {
				return errors.New("shutting down")
			}
			return nil
		},
	}, reg, ops.WithPprof(cfg.Pprof))
	m.HTTP, err = ops.Listen(cfg.HTTPAddr, h)
	if err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("BOT_HTTP_ADDR: %w", err)
	}
	return m, nil
}

// Run serves until ctx is cancelled (SIGTERM/SIGINT), Slack refuses the
// credentials or the HTTP server fails. Shutdown stops taking envelopes,
// lets batch calls and store writes in flight finish and closes the socket,
// all within BOT_SHUTDOWN_TIMEOUT; an overrun is an error.
func (m *Main) Run(ctx context.Context) error {
	httpErr := make(chan error, 1)
	go func() { httpErr <- m.HTTP.Serve() }()
	if m.Config.Pprof {
		m.Log.Warn().Str("http_addr", m.HTTP.Addr()).Msg("serving /healthz, /readyz, /metrics and the profiler at /debug/pprof/ (BOT_PPROF); keep this address private")
	} else {
		m.Log.Info().Str("http_addr", m.HTTP.Addr()).Msg("serving /healthz, /readyz, /metrics")
	}

	botCtx, stopBot := context.WithCancel(ctx)
	defer stopBot()
	// Learn each fleet's size once (one small list call), so that the
	// first lookup of several instances can already choose between paging
	// and asking per instance (at most min(N, pages) calls).
	for i, db := range m.GeminiDB {
		name := m.Config.Targets[i].Name
		go func() {
			defer m.sized.Add(1)
			page, err := db.ListInstances(botCtx, upgrade.ListOptions{Limit: 1})
			if err != nil {
				m.Log.Warn().Err(err).Str("target", name).Msg("GeminiDB not reachable at start; instance lookups will tell users why")
				return
			}
			m.Log.Info().Str("target", name).Int("instances", page.TotalCount).Msg("fleet size learned")
		}()
	}
	botDone := make(chan error, 1)
	go func() { botDone <- m.Bot.Run(botCtx) }()
	beatDone := make(chan struct{})
	go func() { defer close(beatDone); m.heartbeat(botCtx) }()
	defer func() { stopBot(); <-beatDone }()

	var err error
	select {
	case err = <-botDone:
		botDone = nil
	case <-ctx.Done():
		m.Log.Info().Dur("timeout", m.Config.ShutdownTimeout).Msg("shutting down: finishing work in flight")
	case err = <-httpErr:
		// Serve returns only after Shutdown, so this is a failure: stop the
		// bot too rather than run without /readyz.
		httpErr = nil
		m.Log.Error().Err(err).Msg("ops HTTP server failed; shutting down")
	case <-m.Store.Fenced():
		// A newer release migrated the store: every write fails now, so
		// take no more work (the Deployment replaces this replica).
		err = m.fencedError()
		m.Log.Error().Err(err).Msg("store schema fence; shutting down")
	}
	m.stopping.Store(true)
	stopBot()
	if botDone != nil {
		timer := time.NewTimer(m.Config.ShutdownTimeout)
		defer timer.Stop()
		select {
		case berr := <-botDone:
			if err == nil {
				err = berr
			}
		case <-timer.C:
			err = fmt.Errorf("shutdown took longer than BOT_SHUTDOWN_TIMEOUT (%s); work in flight may be unfinished", m.Config.ShutdownTimeout)
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if serr := m.HTTP.Shutdown(sctx); err == nil {
		err = serr
	}
	if httpErr != nil {
		if herr := <-httpErr; err == nil {
			err = herr
		}
	}
	return err
}

// Close releases the store and the HTTP listener (if Run did not already).
// Run must have returned.
func (m *Main) Close() error {
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	herr := m.HTTP.Shutdown(sctx)
	if err := m.Store.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return herr
}

// healthcheck asks a running bot's /healthz (BOT_HTTP_ADDR on this host),
// so a container image without a shell or curl can have a HEALTHCHECK.
func healthcheck(ctx context.Context, lookup func(string) (string, bool), stderr io.Writer) int {
	addr, ok := lookup("BOT_HTTP_ADDR")
	if !ok || addr == "" {
		addr = ":8080"
	}
	if strings.HasPrefix(addr, ":") {
		addr = "127.0.0.1" + addr
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/healthz", nil)
	if err != nil {
		fmt.Fprintf(stderr, "healthcheck: %v\n", err)
		return exitFailed
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "healthcheck: %v\n", err)
		return exitFailed
	}
	_ = res.Body.Close()
	if res.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "healthcheck: /healthz answered %s\n", res.Status)
		return exitFailed
	}
	return exitOK
}
