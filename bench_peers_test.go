package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/slacktest"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade/upgradetest"
)

// TestPeers measures the bot side by side with two peers doing the bot's
// first step on the same in-process fakes (fake Slack with Socket Mode,
// fake GeminiDB): a Bolt-JS 5 app and "floor", the least work that passes.
// Each is a real process (the bot is this repository's binary), started
// fresh with an empty store for every round; rounds alternate the programs
// (bot, Bolt, floor, bot, …) and the table shows medians, so that a shared
// machine's noise falls on all of them alike. Compare the ratios; absolute
// times vary from run to run. See docs/performance.md.
//
// It is opt-in (it needs node, npm and the peers' source) and asserts
// nothing about time; it prints the table and the targets:
//
//	BENCH_PEERS=1 BENCH_PEERS_DIR=/path/to/bench go test -run TestPeers -v -timeout 30m .
//
// BENCH_ROUNDS (default 3) sets the rounds, BENCH_IDLE (default 30s) the
// idle window, BENCH_PROFILE=DIR writes the bot's CPU profile of every
// burst there (BOT_PPROF; the profiler's own cost is then in the figures).
func TestPeers(t *testing.T) {
	cfg := peersConfig(t)
	res := runPeers(t, cfg)
	t.Log("\n" + res.table())
}

// BenchmarkPeers is TestPeers as a benchmark: one run of every scenario,
// the bot's ratios to the peers reported as metrics.
//
//	BENCH_PEERS=1 BENCH_PEERS_DIR=/path/to/bench go test -run '^$' -bench Peers -benchtime 1x -timeout 30m .
func BenchmarkPeers(b *testing.B) {
	cfg := peersConfig(b)
	for range b.N {
		res := runPeers(b, cfg)
		b.Log("\n" + res.table())
		b.ReportMetric(res.ratio(rate100, "bot", "bolt", cpuOf), "cpu-x-bolt@100/s")
		b.ReportMetric(res.ratio(rate500, "bot", "bolt", cpuOf), "cpu-x-bolt@500/s")
		b.ReportMetric(res.ratio(rate100, "bot", "floor", p99Of), "plan-p99-x-floor@100/s")
		b.ReportMetric(res.ratio(rate100, "bot", "floor", ackOf), "ack-p99-x-floor@100/s")
		b.ReportMetric(res.ratio(openPlans, "bot+300", "bot", p99Of), "plan-p99-x-empty@300-open")
		b.ReportMetric(res.idle.Seconds()*1000, "idle-ms-cpu/min@1000-open")
	}
}

// peersSettings are TestPeers's knobs, read from the environment.
type peersSettings struct {
	dir, profile string
	rounds       int
	idle         time.Duration
}

func peersConfig(tb testing.TB) peersSettings {
	tb.Helper()
	if os.Getenv("BENCH_PEERS") != "1" {
		tb.Skip("side-by-side benchmark, opt-in: BENCH_PEERS=1 BENCH_PEERS_DIR=/path/to/bench (holding boltpeer/ and floorpeer/)")
	}
	s := peersSettings{dir: os.Getenv("BENCH_PEERS_DIR"), profile: os.Getenv("BENCH_PROFILE"), rounds: 3, idle: 30 * time.Second}
	if s.dir == "" {
		tb.Fatal("BENCH_PEERS_DIR must name the directory holding boltpeer/ and floorpeer/")
	}
	if v := os.Getenv("BENCH_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			tb.Fatalf("BENCH_ROUNDS=%q: want a whole number of at least 1", v)
		}
		s.rounds = n
	}
	if v := os.Getenv("BENCH_IDLE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Second {
			tb.Fatalf("BENCH_IDLE=%q: want a duration of at least 1s", v)
		}
		s.idle = d
	}
	if s.profile != "" {
		if err := os.MkdirAll(s.profile, 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	return s
}

// burstSpec is one measured burst: n commands at rate a second, after
// openPlans plans were made (by as many other people) and left open.
type burstSpec struct {
	name            string
	n, rate, opened int
}

// The scenarios.
var (
	rate100   = burstSpec{name: "200 commands at 100/s", n: 200, rate: 100}
	rate500   = burstSpec{name: "500 commands at 500/s", n: 500, rate: 500}
	openPlans = burstSpec{name: "200 commands at 100/s, the bot with and without 300 open plans", n: 200, rate: 100}
)

// runResult is one process's figures for one burst.
type runResult struct {
	cpu                      time.Duration // utime+stime over the burst
	planP50, planP99, ackP99 time.Duration
	plans, busy, failed      int // plans posted, busy replies, commands without an answer or ack
	slackConns, gdbConns     int // TCP connections the fakes accepted during the burst
}

var (
	cpuOf = func(r runResult) float64 { return r.cpu.Seconds() }
	p50Of = func(r runResult) float64 { return r.planP50.Seconds() }
	p99Of = func(r runResult) float64 { return r.planP99.Seconds() }
	ackOf = func(r runResult) float64 { return r.ackP99.Seconds() }
)

// peersResult holds every round of every scenario.
type peersResult struct {
	rounds map[string]map[string][]runResult // scenario → program → rounds
	idle   time.Duration                     // the bot's CPU per minute, idle with 1,000 open plans
	idle0  time.Duration                     // the same with no open plan
	idleFl time.Duration                     // the floor's, idle: the cost of the Socket Mode pings alone
	idleOn time.Duration                     // the window idle was measured over
}

// runPeers runs every scenario, rounds alternating the programs.
func runPeers(tb testing.TB, s peersSettings) *peersResult {
	tb.Helper()
	work := tb.TempDir()
	build := buildPeers(tb, s.dir, work)
	bot := peerKind{name: "bot", planVia: "response_url", command: func() *exec.Cmd { return exec.Command(build.bot) }}
	bolt := peerKind{name: "bolt", planVia: "chat.postEphemeral", command: func() *exec.Cmd {
		c := exec.Command("node", "app.js")
		c.Dir = build.boltDir
		return c
	}}
	floor := peerKind{name: "floor", planVia: "response_url", command: func() *exec.Cmd { return exec.Command(build.floor) }}

	res := &peersResult{rounds: map[string]map[string][]runResult{}}
	add := func(spec burstSpec, name string, r runResult) {
		if res.rounds[spec.name] == nil {
			res.rounds[spec.name] = map[string][]runResult{}
		}
		res.rounds[spec.name][name] = append(res.rounds[spec.name][name], r)
	}
	for _, spec := range []burstSpec{rate100, rate500} {
		for round := range s.rounds {
			for _, k := range []peerKind{bot, bolt, floor} {
				prof := ""
				if s.profile != "" && k.name == "bot" {
					prof = filepath.Join(s.profile, fmt.Sprintf("bot-%d-per-s-round%d", spec.rate, round+1))
				}
				r := measureBurst(tb, k, work, spec, prof)
				tb.Logf("%s, round %d, %s: %+v", spec.name, round+1, k.name, r)
				add(spec, k.name, r)
			}
		}
	}
	for round := range s.rounds {
		for _, opened := range []int{0, 300} {
			spec := openPlans
			spec.opened = opened
			name := "bot"
			if opened > 0 {
				name = fmt.Sprintf("bot+%d", opened)
			}
			r := measureBurst(tb, bot, work, spec, "")
			tb.Logf("%s, round %d, %s: %+v", spec.name, round+1, name, r)
			add(openPlans, name, r)
		}
	}
	res.idleOn = s.idle
	res.idle0 = measureIdle(tb, bot, work, 0, s.idle)
	res.idle = measureIdle(tb, bot, work, 1000, s.idle)
	res.idleFl = measureIdle(tb, floor, work, 0, s.idle)
	return res
}

// rig is one program running against fresh fakes.
type rig struct {
	tb   testing.TB
	kind peerKind
	sl   *slacktest.Server
	gdb  *upgradetest.Server
	ids  []string // the fake's instance IDs
	proc *proc
	http string // the bot's ops address
}

// startRig starts fresh fakes (30 Cassandra instances) and the program,
// and waits for its Socket Mode connection.
func startRig(tb testing.TB, k peerKind, work string, extra ...string) *rig {
	tb.Helper()
	// Real Slack pings every few seconds; the fake's default (100 ms) would
	// make idle CPU a measure of pongs.
	sl, err := slacktest.NewServer(slacktest.WithPingInterval(5 * time.Second))
	if err != nil {
		tb.Fatal(err)
	}
	gdb, err := upgradetest.Start(upgradetest.WithToken(testGeminiToken))
	if err != nil {
		sl.Close()
		tb.Fatal(err)
	}
	r := &rig{tb: tb, kind: k, sl: sl, gdb: gdb}
	for i := range 30 {
		in := upgradetest.NewInstance(fmt.Sprintf("db-%d", i+1), "cassandra")
		gdb.AddInstance(in)
		r.ids = append(r.ids, in.ID)
	}
	env := []string{
		"SLACK_APP_TOKEN=" + sl.AppToken(), "SLACK_BOT_TOKEN=" + sl.BotToken(), "SLACK_API_URL=" + sl.APIURL(),
		"GEMINIDB_ENDPOINT=" + gdb.URL, "GEMINIDB_PROJECT_ID=" + gdb.ProjectID, "GEMINIDB_AUTH_TOKEN=" + testGeminiToken,
	}
	if k.name == "bot" {
		r.http = freeAddr(tb)
		store := filepath.Join(work, fmt.Sprintf("bot-%d.db", time.Now().UnixNano()))
		env = append(env, "BOT_ALLOWED_USERS=*", "BOT_STORE="+store, "BOT_HTTP_ADDR="+r.http, "BOT_POLL_INTERVAL=30s", "LOG_LEVEL=info")
		tb.Cleanup(func() { _ = os.Remove(store) })
	}
	r.proc = startProc(tb, k.command(), append(env, extra...))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := sl.WaitConnections(ctx, 1); err != nil {
		r.stop()
		tb.Fatalf("%s did not connect to Socket Mode: %v\n%s", k.name, err, r.proc.logs)
	}
	return r
}

// stop ends the program and the fakes.
func (r *rig) stop() {
	r.proc.stop()
	r.sl.Close()
	r.gdb.Close()
}

// pid is the program's process ID.
func (r *rig) pid() int { return r.proc.cmd.Process.Pid }

// cpu reads the program's CPU time; clock ticks unless precise.
func (r *rig) cpu(precise bool) time.Duration {
	r.tb.Helper()
	read := cpuTime
	if precise {
		read = preciseCPU
	}
	d, err := read(r.pid())
	if err != nil {
		r.tb.Fatal(err)
	}
	return d
}

// sent is one command of a burst.
type sent struct {
	key string // the response URL or the user the plan is posted for
	at  time.Time
	ack time.Duration
	err error
}

// burst sends n slash commands at rate a second from n people whose IDs
// start with prefix (3 instance IDs each) and waits until each is answered
// (plan or busy) or a minute has passed since the last was sent.
func (r *rig) burst(prefix string, n, rate int) []sent {
	r.tb.Helper()
	out := make([]sent, n)
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(rate))
	for i := range n {
		<-tick.C
		wg.Go(func() {
			user := fmt.Sprintf("%s%06d", prefix, i)
			text := strings.Join([]string{r.ids[i%30], r.ids[(i+1)%30], r.ids[(i+2)%30]}, " ")
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			out[i].at = time.Now()
			ack, err := r.sl.SlashCommand(ctx, slacktest.SlashCommand{UserID: user, ChannelID: opsChannel, Command: "/geminidb-patch", Text: text})
			out[i].ack, out[i].err = ack.Latency, err
			out[i].key = ack.ResponseURL
			if r.kind.planVia != "response_url" {
				out[i].key = user
			}
		})
	}
	tick.Stop()
	wg.Wait()
	return out
}

// answers waits until every command of cmds is answered, or for at most
// patience, and returns when each answer was posted (by key) and which
// were busy replies.
func (r *rig) answers(cmds []sent, patience time.Duration) (map[string]time.Time, map[string]bool) {
	at, busy := map[string]time.Time{}, map[string]bool{}
	deadline := time.Now().Add(patience)
	seen := 0
	for {
		calls := r.sl.Calls()
		for _, c := range calls[seen:] {
			key := c.URL
			if c.Method != r.kind.planVia {
				continue
			}
			if r.kind.planVia != "response_url" {
				key = c.User
			}
			isPlan, isBusy := strings.Contains(c.Text, "Patch plan"), strings.Contains(c.Text, "busy")
			if _, dup := at[key]; dup || !(isPlan || isBusy) {
				continue
			}
			at[key], busy[key] = c.At, isBusy
		}
		seen = len(calls)
		missing := 0
		for _, c := range cmds {
			if _, ok := at[c.key]; !ok && c.err == nil {
				missing++
			}
		}
		if missing == 0 || time.Now().After(deadline) {
			return at, busy
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// measureBurst runs one program through spec on fresh fakes: spec.opened
// plans first (at 200/s), 10 warm-up commands, then the measured burst.
func measureBurst(tb testing.TB, k peerKind, work string, spec burstSpec, profile string) runResult {
	tb.Helper()
	var extra []string
	if profile != "" {
		extra = append(extra, "BOT_PPROF=true")
	}
	r := startRig(tb, k, work, extra...)
	defer r.stop()
	if spec.opened > 0 {
		r.answers(r.burst("US", spec.opened, 200), 5*time.Minute)
	}
	r.answers(r.burst("UW", 10, 50), time.Minute)
	time.Sleep(300 * time.Millisecond) // the warm-up's tail (logs, commits)

	// The CPU profile is taken in 2 s pieces until the burst is answered
	// (how long that takes is not known in advance); go tool pprof merges
	// the pieces it is given.
	var profDone chan error
	stopProf := make(chan struct{})
	if profile != "" {
		profDone = make(chan error, 1)
		go func() {
			for part := 1; ; part++ {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				err := fetchTo(ctx, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=2", r.http), fmt.Sprintf("%s.cpu%02d.pprof", profile, part))
				cancel()
				select {
				case <-stopProf:
					profDone <- err
					return
				default:
				}
				if err != nil {
					profDone <- err
					return
				}
			}
		}()
	}
	slack0, gdb0 := r.sl.HTTPConnections(), r.gdb.Connections()
	cpu0 := r.cpu(false)
	cmds := r.burst("UB", spec.n, spec.rate)
	at, busy := r.answers(cmds, 2*time.Minute)
	out := runResult{cpu: r.cpu(false) - cpu0, slackConns: r.sl.HTTPConnections() - slack0, gdbConns: r.gdb.Connections() - gdb0}
	close(stopProf)
	if profDone != nil {
		if err := <-profDone; err != nil {
			tb.Errorf("CPU profile: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := fetchTo(ctx, "http://"+r.http+"/debug/pprof/allocs", profile+".allocs.pprof"); err != nil {
			tb.Errorf("allocation profile: %v", err)
		}
		cancel()
	}
	var plans, acks []time.Duration
	for _, c := range cmds {
		if c.err != nil {
			out.failed++
			continue
		}
		acks = append(acks, c.ack)
		t, ok := at[c.key]
		switch {
		case !ok:
			out.failed++
		case busy[c.key]:
			out.busy++
		default:
			out.plans++
			plans = append(plans, t.Sub(c.at))
		}
	}
	if out.failed > 0 || out.busy > 0 {
		tb.Errorf("%s, %s: %d commands without an answer or ack, %d busy replies, of %d\n%s", k.name, spec.name, out.failed, out.busy, spec.n, tail(r.proc.logs.String(), 2000))
	}
	out.planP50, out.planP99 = quantile(plans, 0.5), quantile(plans, 0.99)
	out.ackP99 = quantile(acks, 0.99)
	return out
}

// measureIdle makes opened plans (at 200/s) and then measures the bot's
// CPU over window, when nothing happens but its polls and the Socket Mode
// pings, as CPU per minute.
func measureIdle(tb testing.TB, k peerKind, work string, opened int, window time.Duration) time.Duration {
	tb.Helper()
	r := startRig(tb, k, work)
	defer r.stop()
	if opened > 0 {
		seeds := r.burst("US", opened, 200)
		if at, _ := r.answers(seeds, 10*time.Minute); len(at) < opened {
			tb.Errorf("idle: %d of %d plans made", len(at), opened)
		}
	}
	time.Sleep(2 * time.Second) // the seeding's tail
	cpu0 := r.cpu(true)
	time.Sleep(window)
	used := r.cpu(true) - cpu0
	per := time.Duration(float64(used) * float64(time.Minute) / float64(window))
	tb.Logf("idle with %d open plans: %v CPU in %v, %v per minute", opened, used, window, per)
	return per
}

// quantile is the q-quantile of ds (nearest rank), 0 for none.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*q+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

// tail is the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
