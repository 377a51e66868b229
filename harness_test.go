package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/config"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/secret"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/slacktest"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade/upgradetest"
)

// Secrets used by the end-to-end tests; the logs are searched for them.
const (
	testGeminiToken = "MIIgeminidb-test-token-4f2a9c"
	alice           = "UALICE"
	bob             = "UBOB"
	carol           = "UCAROL"
	opsChannel      = "COPS"
)

// testClock is real time plus an offset that Advance moves on, so a test
// can let a plan's TTL run out without sleeping through it.
type testClock struct {
	mu     sync.Mutex
	offset time.Duration
}

// Now is time.Now plus the offset.
func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

// Advance moves the clock d forward.
func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// harness runs the real bot, wired by NewMain, against a fake Slack and a
// fake GeminiDB API.
type harness struct {
	t     testing.TB
	slack *slacktest.Server
	gdb   *upgradetest.Server
	cfg   config.Config // what the bot starts with; validated at each start
	logs  *syncBuffer
	clock *testClock // the bot's clock: real time, moved on by Advance

	baseCalls int // GeminiDB calls made before the tests' own actions

	main     *Main
	replicas []*Main // started by startReplica, stopped at cleanup
	cancel   context.CancelFunc
	done     chan error
}

// botConfig is a valid configuration pointing the bot at the fakes, with a
// fresh store file and a free HTTP port. Built in code, not read from the
// environment, so tests run side by side; start validates it as FromEnv
// validates the environment's.
func botConfig(t testing.TB, sl *slacktest.Server, gdb *upgradetest.Server) config.Config {
	c := config.Defaults()
	c.SlackAppToken = secret.Secret(sl.AppToken())
	c.SlackBotToken = secret.Secret(sl.BotToken())
	c.SlackAPIURL = sl.APIURL()
	c.GeminiDBEndpoint = gdb.URL
	c.GeminiDBProjectID = gdb.ProjectID
	c.GeminiDBAuthToken = testGeminiToken
	c.AllowedUsers = []string{alice}
	c.Store = filepath.Join(t.TempDir(), "bot.db")
	c.HTTPAddr = "127.0.0.1:0"
	return c
}

// withConfig is the environ of run whose configuration is cfg, validated
// as main validates the environment's; no single variable is set.
func withConfig(cfg config.Config) environ {
	return environ{
		config: func() (config.Config, error) {
			c := cfg
			if err := c.Validate(); err != nil {
				return config.Config{}, err
			}
			return c, nil
		},
		lookup: config.MapLookup(nil),
	}
}

// harnessChannels are the channels the end-to-end tests use: public, every
// user and the bot in them.
var harnessChannels = []string{"COPS", "COTHER", "CSTAGE", "CRANDOM", "CEUNL", "CEUDE", "CDE1"}

// strictSlack is the fake Slack every harness starts with: every limit real
// Slack enforces (slacktest.Strict) and the tests' channels declared. A
// test's own options come after and may change either.
func strictSlack() []slacktest.Option {
	opts := []slacktest.Option{slacktest.WithLimits(slacktest.Strict())}
	for _, id := range harnessChannels {
		opts = append(opts, slacktest.WithChannel(slacktest.Channel{ID: id, Everyone: true, Members: []string{slacktest.BotUserID}}))
	}
	return opts
}

// newHarness builds the fakes and the configuration; tweak edits the
// configuration before the bot starts. The bot is started.
func newHarness(t testing.TB, tweak func(c *config.Config), slackOpts ...slacktest.Option) *harness {
	t.Helper()
	return newHarnessWith(t, []upgradetest.ServerOption{upgradetest.WithToken(testGeminiToken)}, tweak, slackOpts...)
}

// newHarnessWith is newHarness with the fake GeminiDB's options (e.g. which
// credentials it accepts).
func newHarnessWith(t testing.TB, gdbOpts []upgradetest.ServerOption, tweak func(c *config.Config), slackOpts ...slacktest.Option) *harness {
	t.Helper()
	// Every harness has its own fakes, store, port and clock, and no test
	// touches the process environment, so tests run side by side: each
	// test says so itself (t.Parallel) before building its harness.
	sl := slacktest.New(t, append(strictSlack(), slackOpts...)...)
	gdb := upgradetest.NewServer(t, gdbOpts...)
	cfg := botConfig(t, sl, gdb)
	cfg.AllowedUsers = []string{alice, bob}
	cfg.PollInterval = 40 * time.Millisecond
	cfg.LogLevel = "debug"
	if tweak != nil {
		tweak(&cfg)
	}
	h := &harness{t: t, slack: sl, gdb: gdb, cfg: cfg, logs: &syncBuffer{}, clock: &testClock{}}
	h.start()
	t.Cleanup(func() {
		h.stop()
		if v := sl.Violations(); len(v) > 0 {
			t.Errorf("Slack protocol violations by the bot: %q", v)
		}
		h.assertNoSecretsLogged()
	})
	return h
}

// start runs the bot and waits until its Socket Mode connection is up.
func (h *harness) start() {
	h.t.Helper()
	cfg := h.cfg
	if err := cfg.Validate(); err != nil {
		h.t.Fatalf("Validate: %v", err)
	}
	cfg.Now = h.clock.Now
	before := h.slack.Connections()
	m, err := NewMain(cfg, h.logs)
	if err != nil {
		h.t.Fatalf("NewMain: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.main, h.cancel, h.done = m, cancel, make(chan error, 1)
	go func() { h.done <- m.Run(ctx) }()
	if err := h.slack.WaitConnections(h.ctx(), before+1); err != nil {
		h.t.Fatalf("bot did not connect to Socket Mode: %v\nlogs:\n%s", err, h.logs.String())
	}
	// At start the bot asks GeminiDB once for the fleet's size; wait for it
	// so tests can count the calls their own actions cause.
	if err := h.slack.WaitFor(h.ctx(), "the start-up fleet-size call", func(*slacktest.Server) bool {
		return m.sized.Load() == int64(len(m.GeminiDB))
	}); err != nil {
		h.t.Fatal(err)
	}
	h.baseCalls = h.gdb.Calls("")
}

// cloudCalls is how many GeminiDB calls were made since the bot started.
func (h *harness) cloudCalls() int { return h.gdb.Calls("") - h.baseCalls }

// stop cancels the bot, waits for it and closes the store.
func (h *harness) stop() {
	if h.main == nil {
		return
	}
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("bot stopped with an error: %v", err)
		}
	case <-time.After(15 * time.Second):
		h.t.Error("bot did not stop within 15s")
	}
	if err := h.main.Close(); err != nil {
		h.t.Errorf("close: %v", err)
	}
	h.main = nil
}

// restart stops the bot and starts a new one on the same store.
func (h *harness) restart() {
	h.t.Helper()
	h.stop()
	h.start()
}

func (h *harness) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	h.t.Cleanup(cancel)
	return ctx
}

func (h *harness) assertNoSecretsLogged() {
	logs := h.logs.String()
	for _, secret := range []string{testGeminiToken, h.slack.BotToken(), h.slack.AppToken(), h.cfg.GeminiDBIAMPassword.Reveal(), h.cfg.GeminiDBSecretKey.Reveal()} {
		if secret != "" && strings.Contains(logs, secret) {
			h.t.Errorf("a secret value appears in the logs")
		}
	}
	for _, c := range h.slack.CallsTo("response_url") {
		if strings.Contains(logs, c.URL) {
			h.t.Errorf("a response_url (a credential) appears in the logs")
		}
	}
	for _, c := range h.slack.Calls() {
		body := c.AllText()
		for _, secret := range []string{testGeminiToken, h.cfg.GeminiDBIAMPassword.Reveal(), h.cfg.GeminiDBSecretKey.Reveal()} {
			if secret != "" && strings.Contains(body, secret) {
				h.t.Errorf("a secret value appears in a Slack message: %s", body)
			}
		}
	}
}

// addInstances adds n instances of engine named prefix-1..n to the fake.
func (h *harness) addInstances(prefix, engine string, n int) []upgrade.Instance {
	var out []upgrade.Instance
	for i := 1; i <= n; i++ {
		in := upgradetest.NewInstance(fmt.Sprintf("%s-%d", prefix, i), engine)
		h.gdb.AddInstance(in)
		out = append(out, in)
	}
	return out
}

// slash sends /geminidb-patch text as user in channel and returns the ack
// and the response URL the bot will answer on.
func (h *harness) slash(user, channel, text string) slacktest.Ack {
	h.t.Helper()
	ack, err := h.slack.SlashCommand(h.ctx(), slacktest.SlashCommand{UserID: user, ChannelID: channel, Command: "/geminidb-patch", Text: text})
	if err != nil {
		h.t.Fatalf("slash command %q: %v", text, err)
	}
	return ack
}

// ackText is the text of an ack's payload.
func ackText(a slacktest.Ack) string {
	var p struct {
		Text string `json:"text"`
	}
	_ = json.Unmarshal(a.Payload, &p)
	return p.Text
}

// reply waits for a response_url post on url whose text matches.
func (h *harness) reply(url string, contains string) slacktest.Call {
	h.t.Helper()
	c, err := h.slack.WaitCall(h.ctx(), "response_url", func(c slacktest.Call) bool {
		return c.URL == url && strings.Contains(c.AllText(), contains)
	})
	if err != nil {
		h.t.Fatalf("no reply on %s containing %q: %v\nreplies: %s\nlogs:\n%s", url, contains, err, h.repliesTo(url), h.logs.String())
	}
	return c
}

func (h *harness) repliesTo(url string) string {
	var out []string
	for _, c := range h.slack.CallsTo("response_url") {
		if c.URL == url {
			out = append(out, c.AllText())
		}
	}
	return strings.Join(out, "\n---\n")
}

// plan sends the command and waits for the plan; it returns the request ID
// carried by the Confirm button ("" if the plan has none) and the reply.
func (h *harness) plan(user, text string) (string, slacktest.Call, slacktest.Ack) {
	h.t.Helper()
	ack := h.slash(user, opsChannel, text)
	c := h.reply(ack.ResponseURL, "patch plan")
	return buttonValue(c.Blocks, "patch_confirm"), c, ack
}

// buttonValue finds the value of the button with actionID in blocks.
func buttonValue(blocks json.RawMessage, actionID string) string {
	var bs []struct {
		Elements []struct {
			ActionID string `json:"action_id"`
			Value    string `json:"value"`
		} `json:"elements"`
	}
	_ = json.Unmarshal(blocks, &bs)
	for _, b := range bs {
		for _, e := range b.Elements {
			if e.ActionID == actionID {
				return e.Value
			}
		}
	}
	return ""
}

// click presses a button as user and returns the ack.
func (h *harness) click(user, action, requestID, responseURL string, retry int) {
	h.t.Helper()
	_, err := h.slack.BlockAction(h.ctx(), slacktest.BlockAction{
		UserID: user, ChannelID: opsChannel, ActionID: action, Value: requestID, ResponseURL: responseURL, Ephemeral: action == "patch_confirm" || action == "patch_cancel",
	}, retry)
	if err != nil {
		h.t.Fatalf("click %s: %v", action, err)
	}
}

// parent waits for the channel message of request id.
func (h *harness) parent(id string) slacktest.Message {
	h.t.Helper()
	var found slacktest.Message
	err := h.slack.WaitFor(h.ctx(), "channel message for "+id, func(s *slacktest.Server) bool {
		for _, m := range s.Messages(opsChannel) {
			if isParent(m, id) {
				found = m
				return true
			}
		}
		return false
	})
	if err != nil {
		h.t.Fatalf("%v\nlogs:\n%s", err, h.logs.String())
	}
	return found
}

// isParent tells whether m is the channel (parent) message of request id.
func isParent(m slacktest.Message, id string) bool {
	text := m.AllText()
	return strings.Contains(text, id) && (strings.Contains(text, "is patching") || strings.Contains(text, "has finished"))
}

// threadIn waits until the thread under ts in channel contains every
// string in want, and returns its text.
func (h *harness) threadIn(channel, ts string, want ...string) string {
	h.t.Helper()
	var text string
	err := h.slack.WaitFor(h.ctx(), fmt.Sprintf("thread containing %q", want), func(s *slacktest.Server) bool {
		var parts []string
		for _, m := range s.Thread(channel, ts) {
			parts = append(parts, m.AllText())
		}
		text = strings.Join(parts, "\n")
		for _, w := range want {
			if !strings.Contains(text, w) {
				return false
			}
		}
		return true
	})
	if err != nil {
		h.t.Fatalf("%v\nthread so far:\n%s\nlogs:\n%s", err, text, h.logs.String())
	}
	return text
}

// threadText waits until the thread under ts in the ops channel contains
// every string in want and returns its text.
func (h *harness) threadText(ts string, want ...string) string {
	h.t.Helper()
	return h.threadIn(opsChannel, ts, want...)
}

// ephemeralTo waits for an ephemeral message to user containing text.
func (h *harness) ephemeralTo(user, contains string) {
	h.t.Helper()
	if _, err := h.slack.WaitCall(h.ctx(), "chat.postEphemeral", func(c slacktest.Call) bool {
		return c.User == user && strings.Contains(c.AllText(), contains)
	}); err != nil {
		h.t.Fatalf("no ephemeral message to %s containing %q: %v\nlogs:\n%s", user, contains, err, h.logs.String())
	}
}

// auditEvents returns the audit log lines with event name.
func (h *harness) auditEvents(event string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(h.logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil {
			continue
		}
		if m["audit"] == true && m["event"] == event {
			out = append(out, m)
		}
	}
	return out
}

// assertBatchCalls waits until the bot has done everything it was asked
// to and checks how often the batch endpoint was called (why says what the
// number means).
func (h *harness) assertBatchCalls(want int, why string) {
	h.t.Helper()
	h.quiesce()
	if n := h.gdb.Calls("/instances/db-upgrade"); n != want {
		h.t.Errorf("batch endpoint called %d times, want %d (%s)", n, want, why)
	}
}

// quiesce waits until every running bot (the harness's and its replicas)
// has handled everything delivered so far (no task queued or running, no
// submission in flight) and its follower has finished two more ticks, so
// whatever the bot (wrongly) might still do would have been done: for
// tests asserting that something did not happen.
func (h *harness) quiesce() {
	h.t.Helper()
	mains := append([]*Main{h.main}, h.replicas...)
	start := make([]int64, len(mains))
	for i, m := range mains {
		start[i] = m.Bot.Activity().Ticks
	}
	if err := h.slack.WaitFor(h.ctx(), "the bot to be idle for two follower ticks", func(*slacktest.Server) bool {
		for i, m := range mains {
			if a := m.Bot.Activity(); a.Busy != 0 || a.Ticks < start[i]+2 {
				return false
			}
		}
		return true
	}); err != nil {
		h.t.Fatalf("%v\nlogs:\n%s", err, h.logs.String())
	}
}
