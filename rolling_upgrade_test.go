package main

import (
	"bufio"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/slacktest"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store/storetest"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade/upgradetest"
)

// previousRelease is the last commit whose store schema is 2: the release
// a rolling deploy of this one replaces, replica by replica.
const previousRelease = "ff4755091af7132679a2f8215c8cce21111828c6"

// buildPreviousRelease builds previousRelease from the repository's
// history into a temporary directory and returns the binary. It skips the
// test, saying why, only when that cannot be done: no git, a checkout
// without that commit (a shallow clone, an exported tree), or a build that
// fails (no module cache or proxy).
func buildPreviousRelease(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the previous release")
	}
	if _, err := exec.LookPath("git"); err != nil {
		t.Skipf("cannot build the previous release %s: no git: %v", previousRelease[:8], err)
	}
	if out, err := exec.Command("git", "cat-file", "-e", previousRelease+"^{commit}").CombinedOutput(); err != nil {
		t.Skipf("cannot build the previous release: commit %s is not in this checkout's history (a shallow clone?): %v %s", previousRelease[:8], err, out)
	}
	dir := t.TempDir()
	src, tarball := filepath.Join(dir, "src"), filepath.Join(dir, "src.tar")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "geminidb-patch-bot-previous")
	for _, c := range [][]string{
		{"git", "archive", "--format=tar", "-o", tarball, previousRelease},
		{"tar", "-xf", tarball, "-C", src},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Skipf("cannot extract the previous release %s: %s: %v\n%s", previousRelease[:8], strings.Join(c, " "), err, out)
		}
	}
	// Without -trimpath the dependencies come from the build cache that
	// the other builds of this module fill; only the module's own
	// packages are compiled.
	build := exec.Command("go", "build", "-o", bin, "-ldflags", "-X main.version=v-previous", ".")
	build.Dir = src
	start := time.Now()
	if out, err := build.CombinedOutput(); err != nil {
		t.Skipf("cannot build the previous release %s: %v\n%s", previousRelease[:8], err, out)
	}
	t.Logf("built the previous release %s in %v", previousRelease[:8], time.Since(start).Round(time.Second))
	return bin
}

// legacyReads counts, through Redis' MONITOR (on a plain connection: the
// go-redis client drops a connection that has unread data), the commands
// that read the keys where a release of schema 2 looks for what to follow:
// each tick of such a replica reads them, so the count shows it kept
// looking.
func legacyReads(t *testing.T, addr string) *atomic.Int64 {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, "MONITOR\r\n"); err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		p := store.DefaultRedisPrefix
		sc := bufio.NewScanner(conn)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if strings.Contains(line, `"`+p+`active-jobs"`) || strings.Contains(line, `"`+p+`state:submitted"`) {
				n.Add(1)
			}
		}
	}()
	t.Cleanup(func() {
		_ = conn.Close()
		<-done
	})
	return &n
}

// A rolling deploy from the previous release, for real: the previous
// release's binary, built from history, and this one's bot share one Redis
// and one Slack app, which hands envelopes to them in turn. This release
// moves the previous one's records into its own key space at start and
// follows their jobs to the end; the previous release, still running,
// sees an empty store, so a Confirm it receives for this release's canary
// plan, or for one waiting for a maintenance window, sends nothing (it
// says it does not know the request), and its follower never takes a
// scheduled request for one that started nothing. This release then sends
// the canary alone, the rest after it, and the scheduled instance when its
// window opens; a previous-release replica restarted now refuses to start.
func TestRollingUpgradeFromPreviousRelease(t *testing.T) {
	// Parallel first: the build of the previous release overlaps the
	// package's other parallel tests.
	t.Parallel()
	oldBin := buildPreviousRelease(t)
	addr := storetest.StartRedis(t)
	sl := slacktest.New(t, slacktest.WithRoundRobin())
	gdb := upgradetest.NewServer(t, upgradetest.WithToken(testGeminiToken))
	cfg := botConfig(t, sl, gdb)
	cfg.Store = "redis://" + addr + "/0"
	cfg.AllowedUsers = []string{alice, bob}
	cfg.PollInterval = 40 * time.Millisecond
	cfg.CommandsPerMin = 1000
	cfg.LogLevel = "debug"
	h := &harness{t: t, slack: sl, gdb: gdb, cfg: cfg, logs: &syncBuffer{}, clock: &testClock{}}
	t.Cleanup(func() {
		h.stop()
		if v := sl.Violations(); len(v) > 0 {
			t.Errorf("Slack protocol violations by the bots: %q", v)
		}
		h.assertNoSecretsLogged()
	})

	// The previous release alone, as before the deploy: it submits a patch
	// whose job is still running when the deploy starts.
	old := &harness{t: t, slack: sl, gdb: gdb, cfg: cfg, logs: &syncBuffer{}}
	startProcess(t, old, oldBin)
	if err := sl.WaitConnections(h.ctx(), 1); err != nil {
		t.Fatalf("the previous release did not connect: %v\nlogs:\n%s", err, old.logs.String())
	}
	pre := h.addInstances("pre", "cassandra", 1)[0]
	preID, _, preAck := h.plan(alice, pre.Name)                   // envelope 1: the previous release
	h.click(alice, "patch_confirm", preID, preAck.ResponseURL, 0) // 2: the previous release
	h.waitBatchCalls(1)
	preTS := h.parent(preID).TS
	h.threadText(preTS, "Batch results")

	// This release starts beside it. From now on the envelopes alternate:
	// odd ones to this release (the newest connection), even ones to the
	// previous release.
	h.start()
	reads := legacyReads(t, addr)

	// The job the previous release started is followed to its end.
	h.gdb.CompleteJob(h.onlyJob(pre), "3.11.3.5")
	h.threadText(preTS, "finished")

	// A canary plan made by this release, confirmed first through the
	// previous one, which does not find it, then through this one.
	insts := h.addInstances("db", "cassandra", 3)
	id, plan, ack := h.plan(alice, names(insts)+" --canary 1") // 3: this release
	if !strings.Contains(plan.AllText(), "canary: 1 instance first") {
		t.Fatalf("the plan shows no canary:\n%s", plan.AllText())
	}
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 0) // 4: the previous release
	h.ephemeralTo(alice, "I do not know the patch request `"+id+"`")
	if n := gdb.Calls("/instances/db-upgrade"); n != 1 {
		t.Fatalf("after the previous release got the Confirm: %d batch calls, want still 1", n)
	}
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 0) // 5: this release
	h.waitBatchCalls(2)
	if calls := gdb.BatchCalls(); len(calls[1]) != 1 || calls[1][0] != insts[0].ID {
		t.Fatalf("first batch call of the canary plan = %v, want the canary %s alone", calls[1], insts[0].Name)
	}
	ts := h.parent(id).TS
	h.threadText(ts, "Batch results")
	h.gdb.CompleteJob(h.onlyJob(insts[0]), "3.11.3.5")
	h.waitBatchCalls(3)
	if calls := gdb.BatchCalls(); len(calls[2]) != 2 {
		t.Errorf("second wave = %v, want the other two instances", calls[2])
	}
	for _, in := range insts[1:] {
		h.gdb.CompleteJob(h.onlyJob(in), "3.11.3.5")
	}
	h.threadText(ts, "finished")

	// A request waiting for a window, confirmed by this release: the
	// previous one, which keeps looking for work, never sees it.
	h.slash(alice, opsChannel, "help") // 6: the previous release, to keep the turns
	now, later := h.addInstances("now", "cassandra", 1)[0], h.addInstances("later", "cassandra", 1)[0]
	gdb.SetInstance(later.ID, func(in *upgrade.Instance) { in.MaintenanceWindow = window(2, 2) })
	wid, _, wack := h.plan(alice, now.Name+" "+later.Name+" --wait-for-window") // 7: this release
	h.click(alice, "patch_confirm", wid, wack.ResponseURL, 0)                   // 8: the previous release
	h.ephemeralTo(alice, "I do not know the patch request `"+wid+"`")
	h.click(alice, "patch_confirm", wid, wack.ResponseURL, 0) // 9: this release
	h.waitBatchCalls(4)
	wts := h.parent(wid).TS
	h.threadText(wts, "Batch results")
	h.waitParentText(wid, "scheduled for")
	before := reads.Load()
	pollUntil(t, h, "the previous release to look for work five more times", func() bool { return reads.Load() >= before+5 })
	if n := h.count(wts, "No patch job was started"); n != 0 {
		t.Errorf("the previous release reported the scheduled request as one that started nothing (%d times)", n)
	}
	h.waitParentText(wid, "scheduled for")
	h.clock.Advance(2 * time.Hour)
	h.waitBatchCalls(5)
	// Calls counts a call on arrival, BatchCalls once its IDs are recorded.
	pollUntil(t, h, "the fake to record the fifth batch call", func() bool { return len(gdb.BatchCalls()) >= 5 })
	if calls := gdb.BatchCalls(); len(calls[4]) != 1 || calls[4][0] != later.ID {
		t.Errorf("batch call once the window opened = %v, want %s", calls[4], later.Name)
	}
	h.gdb.CompleteJob(h.onlyJob(now), "3.11.3.5")
	h.gdb.CompleteJob(h.onlyJob(later), "3.11.3.5")
	h.threadText(wts, "finished")
	h.assertBatchCalls(5, "every instance once, none by the previous release")

	// Nothing of this release's is where the previous one reads, and the
	// previous release no longer starts on this store.
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	keys, err := c.Keys(t.Context(), store.DefaultRedisPrefix+"*").Result()
	var legacy []string
	for _, k := range keys {
		name := strings.TrimPrefix(k, store.DefaultRedisPrefix)
		// The version and the registry are shared by every schema; the
		// previous release's own rate limits and redelivery marks expire.
		shared := name == "schema" || name == "replicas" || strings.HasPrefix(name, "v3:")
		if !shared && !strings.HasPrefix(name, "limit:") && !strings.HasPrefix(name, "seen:") {
			legacy = append(legacy, k)
		}
	}
	if err != nil || len(legacy) != 0 {
		t.Errorf("records where the previous release reads: %q, %v; want none", legacy, err)
	}
	restarted := &harness{t: t, slack: sl, gdb: gdb, cfg: cfg, logs: &syncBuffer{}}
	if code := startProcess(t, restarted, oldBin).wait(t, restarted); code == 0 || !strings.Contains(restarted.logs.String(), `schema version "3"`) {
		t.Errorf("the previous release restarted on the migrated store: exit %d, want a refusal naming schema 3\n%s", code, restarted.logs.String())
	}
}
