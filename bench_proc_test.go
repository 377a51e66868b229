package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// This file holds the process side of TestPeers: building the bot and the
// peers, starting one with an environment pointing at the fakes, and reading
// its CPU time from /proc.

// peerKind is one of the programs TestPeers measures.
type peerKind struct {
	name string
	// planVia is the fake Slack method the program posts its plan with:
	// "response_url" (the bot, the floor) or "chat.postEphemeral" (Bolt).
	planVia string
	// command builds the program's command line; env is added to it.
	command func() *exec.Cmd
}

// peerBuild is what buildPeers produced.
type peerBuild struct {
	bot, floor, boltDir string
}

// buildPeers builds the bot from this repository (the real binary), the
// floor peer with go build and installs the Bolt peer's dependencies with
// npm ci, in a copy under work: the peers' directory is only read.
func buildPeers(tb testing.TB, peersDir, work string) peerBuild {
	tb.Helper()
	out := peerBuild{bot: filepath.Join(work, "geminidb-patch-bot"), floor: filepath.Join(work, "floorpeer"), boltDir: filepath.Join(work, "boltpeer")}
	run := func(dir string, name string, args ...string) {
		tb.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		if b, err := cmd.CombinedOutput(); err != nil {
			tb.Fatalf("%s %s (in %s): %v\n%s", name, strings.Join(args, " "), dir, err, b)
		}
	}
	run(".", "go", "build", "-o", out.bot, ".")
	run(filepath.Join(peersDir, "floorpeer"), "go", "build", "-o", out.floor, ".")
	if err := os.CopyFS(out.boltDir, os.DirFS(filepath.Join(peersDir, "boltpeer"))); err != nil {
		tb.Fatalf("copy the Bolt peer: %v", err)
	}
	_ = os.RemoveAll(filepath.Join(out.boltDir, "node_modules"))
	run(out.boltDir, "npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
	return out
}

// proc is one running program.
type proc struct {
	cmd  *exec.Cmd
	logs *bytes.Buffer
}

// startProc starts cmd with env (and PATH and HOME of this process only).
func startProc(tb testing.TB, cmd *exec.Cmd, env []string) *proc {
	tb.Helper()
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	logs := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", cmd.Path, err)
	}
	return &proc{cmd: cmd, logs: logs}
}

// stop sends SIGTERM, waits up to 10 s, then kills.
func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

// clockTick is the unit of utime and stime in /proc/PID/stat (USER_HZ,
// 100 on Linux everywhere that matters).
const clockTick = 10 * time.Millisecond

// cpuTime is the process's user plus system CPU time, all threads
// included, from /proc/PID/stat (in clock ticks, so 10 ms steps).
func cpuTime(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read CPU time: %w", err)
	}
	// The command name (field 2) may hold spaces; fields count from its ')'.
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return 0, fmt.Errorf("read CPU time: no ) in %q", raw)
	}
	f := strings.Fields(string(raw[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("read CPU time: short stat %q", raw)
	}
	// After ')': state is field 3, utime field 14, stime field 15.
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("read CPU time: bad utime/stime in %q", raw)
	}
	return time.Duration(ut+st) * clockTick, nil
}

// preciseCPU is the CPU time of the process's live threads in nanoseconds,
// the sum of /proc/PID/task/*/schedstat, for windows too short for clock
// ticks (an idle minute is a few milliseconds). Threads that have exited
// are missing; Go and Node keep theirs.
func preciseCPU(pid int) (time.Duration, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		return 0, fmt.Errorf("read schedstat of %d: %v", pid, err)
	}
	var sum time.Duration
	for _, t := range tasks {
		raw, err := os.ReadFile(t)
		if err != nil {
			continue // the thread ended meanwhile
		}
		f := strings.Fields(string(raw))
		if len(f) == 0 {
			continue
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("read %s: %w", t, err)
		}
		sum += time.Duration(ns)
	}
	return sum, nil
}

// freeAddr returns a free 127.0.0.1 port, for a child's BOT_HTTP_ADDR.
func freeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// fetchTo GETs url into path (a CPU profile), giving up when ctx ends.
func fetchTo(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, res.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, res.Body); err != nil {
		f.Close()
		return fmt.Errorf("GET %s: %w", url, err)
	}
	return f.Close()
}
