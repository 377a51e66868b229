// Package demo lets anyone try geminidb-patch-bot in one command, without
// a Slack workspace, tokens or a cloud account: it runs the real bot,
// unchanged and configured by a Config it builds (validated as the environment is), over
// real Socket Mode against the in-process fake Slack (internal/slacktest)
// and a fake GeminiDB with a seeded fleet (upgrade/upgradetest), and serves
// a local page that looks and works like a Slack channel. With
// --transcript it plays a scripted tour instead and prints it.
//
// The page's actions reach the bot as Slack would deliver them: slash
// commands and button clicks as Socket Mode envelopes sent by the fake
// Slack, the bot's answers through response URLs and chat.* calls the fake
// records. Nothing here changes how the bot behaves.
package demo

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// Exit statuses, as the command's.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

// DefaultAddr is where the page is served unless --addr says otherwise.
const DefaultAddr = "127.0.0.1:8080"

// maxConfirmTTL is the longest BOT_CONFIRM_TTL the bot takes.
const maxConfirmTTL = 30 * time.Minute

// interactivePoll is BOT_POLL_INTERVAL on the page at normal speed: jobs of
// 10–30 s are seen to end within two seconds.
const interactivePoll = 2 * time.Second

// Option changes how Main runs the demo, for tests.
type Option func(*settings)

// settings are what Options set.
type settings struct {
	now func() time.Time
}

// WithClock makes now the demo's clock (the bot's and the fake cloud's)
// instead of one that runs --speed times faster than the real one: a test
// advances it to see a maintenance window open without waiting.
func WithClock(now func() time.Time) Option { return func(s *settings) { s.now = now } }

// Main runs "geminidb-patch-bot demo [flags]": args are the flags after
// "demo". runBot runs the real bot (the command's own run). It returns the
// exit status.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer, runBot BotRunner, opts ...Option) int {
	var set settings
	for _, o := range opts {
		o(&set)
	}
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", DefaultAddr, "address of the demo page (loopback only, unless you mean it)")
	transcript := fs.Bool("transcript", false, "play a scripted tour and print the conversation, then exit")
	speed := fs.Float64("speed", 1, "run the clock of the bot and the fake cloud this many times faster (jobs end, windows open and plans expire sooner)")
	verbose := fs.Bool("verbose", false, "also write the bot's log (JSON lines) to stderr")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: geminidb-patch-bot demo [--addr %s] [--speed N] [--transcript] [--verbose]\n\n", DefaultAddr)
		fmt.Fprintln(stderr, "Runs the real bot against an embedded fake Slack and fake GeminiDB, and serves a")
		fmt.Fprintln(stderr, "page that works like a Slack channel. No tokens, accounts or network needed.")
		fmt.Fprintln(stderr)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "demo: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return exitUsage
	}
	if *speed < 1 || *speed > 1000 {
		fmt.Fprintln(stderr, "demo: --speed must be between 1 and 1000")
		return exitUsage
	}
	var logs io.Writer
	if *verbose {
		logs = stderr
	}
	if *transcript {
		if err := Transcript(ctx, stdout, runBot, logs); err != nil {
			fmt.Fprintf(stderr, "demo: %v\n", err)
			return exitFailed
		}
		return exitOK
	}
	if err := serve(ctx, *addr, *speed, set.now, stdout, stderr, logs, runBot); err != nil {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return exitFailed
	}
	return exitOK
}

// serve runs the World and the page until ctx ends (Ctrl-C). now is the
// demo's clock; nil means one speed times faster than the real one.
func serve(ctx context.Context, addr string, speed float64, now func() time.Time, stdout, stderr, logs io.Writer, runBot BotRunner) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("serve the demo page on %s: %w (choose another with --addr)", addr, err)
	}
	defer ln.Close()
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	var extraHosts []string
	if ip := net.ParseIP(host); !ip.IsLoopback() {
		fmt.Fprintf(stderr, "demo: warning: the page is served on %s, beyond this machine; it has no login\n", ln.Addr())
		if !ip.IsUnspecified() {
			extraHosts = append(extraHosts, ln.Addr().String())
		}
	}
	base := pageURL(host, port)
	poll := max(time.Duration(float64(interactivePoll)/speed), 100*time.Millisecond)
	if now == nil {
		now = fastClock(speed, time.Now)
	}
	opts := worldOptions{anchor: now().UTC().Truncate(time.Hour), speed: speed, now: now, poll: poll, logs: logs, permalinkBase: base}
	if speed > 1 {
		// Plans expire on the bot's clock: on a fast one, give them the
		// longest life Slack's response URLs allow.
		opts.confirmTTL = maxConfirmTTL
	}
	w, err := newWorld(opts, runBot)
	if err != nil {
		return err
	}
	if err := w.Start(ctx); err != nil {
		_ = w.Close()
		return err
	}
	srv := &http.Server{Handler: newHandler(w, port, extraHosts...), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "geminidb-patch-bot demo: the real bot is running against an embedded Slack and GeminiDB.\n")
	fmt.Fprintf(stdout, "Open %s/ and type %s help. Ctrl-C stops it.\n", base, Command)

	var runErr error
	select {
	case <-ctx.Done():
	case status := <-w.Died():
		runErr = fmt.Errorf("the bot stopped unexpectedly with exit status %d; its log ends:\n%s", status, w.LogTail(20))
	case err := <-served:
		runErr = fmt.Errorf("serve the demo page: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	if err := w.Close(); runErr == nil {
		runErr = err
	}
	if runErr == nil {
		fmt.Fprintln(stdout, "geminidb-patch-bot demo: stopped.")
	}
	return runErr
}

// pageURL is the page's URL (no trailing slash) for the address it is
// served on: on a wildcard address, the loopback one.
func pageURL(host, port string) string {
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}
