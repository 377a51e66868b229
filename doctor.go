package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// doctorTimeout bounds each check so a hanging endpoint cannot hang doctor.
const doctorTimeout = 20 * time.Second

// doctor checks what the bot needs and prints one PASS/FAIL line per check.
// Its exit status is 0 only when every check passed.
func doctor(ctx context.Context, out io.Writer) int {
	failed := false
	report := func(name string, err error, ok string) {
		if err != nil {
			failed = true
			fmt.Fprintf(out, "FAIL  %-20s %v\n", name, err)
			return
		}
		fmt.Fprintf(out, "PASS  %-20s %s\n", name, ok)
	}
	cfg, err := LoadConfig()
	if err != nil {
		report("configuration", err, "")
		fmt.Fprintln(out, "Fix the configuration first; the other checks need it.")
		return exitFailed
	}
	mode, _ := cfg.AuthMode()
	report("configuration", nil, fmt.Sprintf("GeminiDB auth: %s; store: %s", mode, cfg.Store))

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
		if _, _, err := api.StartSocketModeContext(ctx); err != nil {
			return "", fmt.Errorf("cannot open a Socket Mode connection (SLACK_APP_TOKEN needs connections:write, Socket Mode must be on): %w", err)
		}
		return "apps.connections.open works", nil
	})
	check("geminidb", func(ctx context.Context) (string, error) {
		db, err := NewGeminiDB(cfg, nil)
		if err != nil {
			return "", err
		}
		page, err := db.ListInstances(ctx, upgrade.ListOptions{Limit: 1})
		if err != nil {
			return "", fmt.Errorf("list instances: %w", err)
		}
		return fmt.Sprintf("authenticated (%s); %d instances in project %s", mode, page.TotalCount, cfg.GeminiDBProjectID), nil
	})
	check("store", func(context.Context) (string, error) { return checkStore(cfg.Store) })
	if failed {
		return exitFailed
	}
	return exitOK
}

// checkStore opens an existing store read-write (which also checks it is
// not damaged) or, when there is none yet, checks the file can be created.
func checkStore(path string) (string, error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		dir := filepath.Dir(path)
		f, err := os.CreateTemp(dir, ".doctor-*")
		if err != nil {
			return "", fmt.Errorf("cannot create %s: %w", path, err)
		}
		name := f.Name()
		_ = f.Close()
		_ = os.Remove(name)
		return fmt.Sprintf("%s does not exist yet and can be created", path), nil
	}
	st, err := store.Open(path)
	if err != nil {
		return "", err
	}
	if err := st.Close(); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s opens and is consistent", path), nil
}
