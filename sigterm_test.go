package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/config"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/secret"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/slacktest"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// binaryVersion is stamped into the binary the process tests build.
const binaryVersion = "v0.0.0-e2e"

// built is the binary the process tests share: built once per test run.
var built struct {
	once sync.Once
	dir  string
	bin  string
	err  error
	out  []byte
}

// buildBinary builds the bot, as users build it, once per test run, into a
// temporary directory removed when the tests end (TestMain).
func buildBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	built.once.Do(func() {
		built.dir, built.err = os.MkdirTemp("", "geminidb-patch-bot-test-")
		if built.err != nil {
			return
		}
		built.bin = filepath.Join(built.dir, "geminidb-patch-bot")
		cmd := exec.Command("go", "build", "-o", built.bin, "-ldflags", "-X main.version="+binaryVersion, ".")
		built.out, built.err = cmd.CombinedOutput()
	})
	if built.err != nil {
		t.Fatalf("go build: %v\n%s", built.err, built.out)
	}
	return built.bin
}

// TestMain removes the shared binary after the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		_ = os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// processEnv is cfg as the variables that configure it (the names its
// envconfig tags give) and nothing else of the bot's (the developer's own
// variables must not leak in), plus what any process needs.
func processEnv(cfg config.Config) []string {
	out := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	v, t := reflect.ValueOf(cfg), reflect.TypeFor[config.Config]()
	for i := range t.NumField() {
		key := t.Field(i).Tag.Get("envconfig")
		var val string
		switch x := v.Field(i).Interface().(type) {
		case secret.Secret:
			val = x.Reveal()
		case string:
			val = x
		case []string:
			val = strings.Join(x, ",")
		case time.Duration:
			val = x.String()
		case int:
			val = strconv.Itoa(x)
		}
		if key != "" && val != "" {
			out = append(out, key+"="+val)
		}
	}
	return out
}

// botProcess is the built binary running against the in-process fakes.
type botProcess struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // of Wait, once done is closed
}

// startProcess starts bin with env; its output goes to h.logs, and it is
// killed at the end of the test if still running.
func startProcess(t *testing.T, h *harness, bin string, args ...string) *botProcess {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = processEnv(h.cfg)
	cmd.Stdout, cmd.Stderr = h.logs, h.logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	p := &botProcess{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// wait waits (generously) for the process to exit and returns its status.
func (p *botProcess) wait(t *testing.T, h *harness) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(90 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("the bot did not exit within 90s of the signal\nlogs:\n%s", h.logs.String())
	}
	var ee *exec.ExitError
	switch {
	case p.err == nil:
		return 0
	case errors.As(p.err, &ee):
		return ee.ExitCode()
	}
	t.Fatalf("wait: %v", p.err)
	return -1
}

// pollUntil waits, with a generous deadline, until cond holds.
func pollUntil(t *testing.T, h *harness, desc string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s\nlogs:\n%s", desc, h.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// processHarness is a harness whose bot is the built binary in its own
// process rather than NewMain in this one.
func processHarness(t *testing.T, tweak func(c *config.Config)) *harness {
	t.Helper()
	sl, gdb, cfg := fakeConfig(t)
	cfg.LogLevel = "debug"
	cfg.PollInterval = 40 * time.Millisecond
	if tweak != nil {
		tweak(&cfg)
	}
	h := &harness{t: t, slack: sl, gdb: gdb, cfg: cfg, logs: &syncBuffer{}}
	t.Cleanup(func() {
		if v := sl.Violations(); len(v) > 0 {
			t.Errorf("Slack protocol violations by the bot: %q", v)
		}
		h.assertNoSecretsLogged()
	})
	return h
}

// SIGTERM while a batch call is in flight: the call finishes, is recorded in
// the store and reported in the thread, the socket closes and the process
// exits 0.
func TestSIGTERMFinishesBatchInFlight(t *testing.T) {
	bin := buildBinary(t)
	h := processHarness(t, nil)
	in := h.addInstances("cass-prod", "cassandra", 1)[0]
	h.gdb.SetDelay("/instances/db-upgrade", 3*time.Second)

	p := startProcess(t, h, bin)
	if err := h.slack.WaitConnections(h.ctx(), 1); err != nil {
		t.Fatalf("the bot did not connect: %v\nlogs:\n%s", err, h.logs.String())
	}
	id, planMsg, ack := h.plan(alice, in.Name)
	if id == "" {
		t.Fatalf("plan has no Confirm button:\n%s", planMsg.AllText())
	}
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 0)

	// The fake counts a call when it arrives and records its IDs when it
	// answers, after the delay.
	pollUntil(t, h, "the batch call to arrive", func() bool { return h.gdb.Calls("/instances/db-upgrade") > 0 })
	if n := len(h.gdb.BatchCalls()); n != 0 {
		t.Fatalf("the batch call was answered before SIGTERM could be sent (%d calls); the test tests nothing", n)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, h); code != 0 {
		t.Errorf("got exit status %d, want 0\nlogs:\n%s", code, h.logs.String())
	}

	calls := h.gdb.BatchCalls()
	if len(calls) != 1 || len(calls[0]) != 1 || calls[0][0] != in.ID {
		t.Fatalf("got batch calls %v, want one call with %s, completed", calls, in.ID)
	}
	jobIDs := h.gdb.JobsFor(in.ID)
	if len(jobIDs) != 1 {
		t.Fatalf("got jobs %v for %s, want 1", jobIDs, in.ID)
	}

	// The store file, opened after the process exited.
	st, err := store.Open(h.cfg.Store)
	if err != nil {
		t.Fatalf("open the store the bot left: %v", err)
	}
	defer st.Close()
	r, err := st.Get(t.Context(), id)
	if err != nil {
		t.Fatalf("get request %s: %v", id, err)
	}
	if r.State != store.Submitted {
		t.Errorf("request state: got %s, want %s", r.State, store.Submitted)
	}
	var results []upgrade.UpgradeResult
	if err := json.Unmarshal(r.Results, &results); err != nil || len(results) != 1 || results[0].JobID != jobIDs[0] {
		t.Errorf("request results: got %s (%v), want the job %s of %s", r.Results, err, jobIDs[0], in.ID)
	}
	jobs, err := st.Jobs(t.Context(), id)
	if err != nil || len(jobs) != 1 || jobs[0].ID != jobIDs[0] || jobs[0].InstanceID != in.ID {
		t.Errorf("tracked jobs: got %+v (%v), want job %s for %s", jobs, err, jobIDs[0], in.ID)
	}

	// The thread says so too, and the socket is closed.
	h.threadText(h.parent(id).TS, "Batch results", jobIDs[0])
	if err := h.slack.WaitFor(h.ctx(), "no open Socket Mode connection", func(s *slacktest.Server) bool {
		return s.OpenConnections() == 0
	}); err != nil {
		t.Error(err)
	}
	if !strings.Contains(h.logs.String(), `"message":"stopped"`) {
		t.Errorf("the log does not say the bot stopped cleanly:\n%s", h.logs.String())
	}
}

// SIGINT on an idle bot: a clean exit, and the store is left closed and
// consistent.
func TestSIGINTIdle(t *testing.T) {
	bin := buildBinary(t)
	h := processHarness(t, nil)
	p := startProcess(t, h, bin)
	if err := h.slack.WaitConnections(h.ctx(), 1); err != nil {
		t.Fatalf("the bot did not connect: %v\nlogs:\n%s", err, h.logs.String())
	}
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, h); code != 0 {
		t.Errorf("got exit status %d, want 0\nlogs:\n%s", code, h.logs.String())
	}
	st, err := store.Open(h.cfg.Store)
	if err != nil {
		t.Fatalf("open the store the bot left: %v", err)
	}
	_ = st.Close()
}

// The binary prints the version stamped at build time; a bad variable
// stops it with status 2 and one line naming it, without its value; and
// an empty environment names every missing variable in one run.
func TestBinaryVersionAndConfigError(t *testing.T) {
	bin := buildBinary(t)
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("version: %v\n%s", err, out)
	}
	if got, want := string(out), "geminidb-patch-bot "+binaryVersion+"\n"; got != want {
		t.Errorf("version: got %q, want %q", got, want)
	}

	cfg := validConfig()
	cfg.SlackBotToken = cfgUserToken
	cmd := exec.Command(bin)
	cmd.Env = processEnv(cfg)
	out, err = cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitConfig {
		t.Errorf("got %v, want exit status %d", err, exitConfig)
	}
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "SLACK_BOT_TOKEN") {
		t.Errorf("got %q, want one line naming SLACK_BOT_TOKEN", out)
	}
	if strings.Contains(string(out), cfgUserToken) {
		t.Errorf("the output %q contains the token", out)
	}

	cmd = exec.Command(bin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	out, err = cmd.CombinedOutput()
	if !errors.As(err, &ee) || ee.ExitCode() != exitConfig {
		t.Errorf("empty environment: got %v, want exit status %d", err, exitConfig)
	}
	lines = strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	missing := []string{"SLACK_APP_TOKEN", "SLACK_BOT_TOKEN", "GEMINIDB_ENDPOINT", "GEMINIDB_PROJECT_ID", "GEMINIDB_AUTH_TOKEN", "BOT_ALLOWED_USERS"}
	if len(lines) != len(missing) {
		t.Errorf("empty environment: got %d lines, want one per missing variable (%d):\n%s", len(lines), len(missing), out)
	}
	for _, name := range missing {
		if !strings.Contains(string(out), "configuration error: "+name+":") {
			t.Errorf("empty environment: the output does not name %s:\n%s", name, out)
		}
	}
}
