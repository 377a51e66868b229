package demo

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/config"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/secret"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/slacktest"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade/upgradetest"
)

// BotRunner runs the real bot, configured by cfg (which it validates as
// the environment's configuration is; its Now is the demo's clock), until
// ctx ends, writing its log to logs; it returns the bot's exit status. The
// command passes its own, so the demo runs exactly what users run.
type BotRunner func(ctx context.Context, cfg config.Config, logs io.Writer) int

// Person is one of the demo's Slack users.
type Person struct {
	ID       string `json:"id"`
	Name     string `json:"name"`      // the handle, as in @ana
	RealName string `json:"real_name"` // what Slack shows next to messages
	Role     string `json:"role"`      // what the person may do, for the page's switch
}

// The demo's people: one who may patch, one who may also approve, one who
// may do neither.
var (
	Requester = Person{ID: "U01ANA", Name: "ana", RealName: "Ana Ortiz", Role: "may patch (in BOT_ALLOWED_USERS)"}
	Approver  = Person{ID: "U02BEN", Name: "ben", RealName: "Ben Okafor", Role: "may patch and approve (BOT_APPROVERS when approvals are on)"}
	Stranger  = Person{ID: "U03SAM", Name: "sam", RealName: "Sam Reyes", Role: "not in BOT_ALLOWED_USERS"}
	People    = []Person{Requester, Approver, Stranger}
)

// Channel is the demo's one channel, the only one in BOT_ALLOWED_CHANNELS.
var Channel = struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}{ID: "C0DBOPS01", Name: "db-ops"}

// BotName is the app's name as the page and the transcript show it.
const BotName = "GeminiDB Patch"

// geminiToken is the token the fake GeminiDB accepts from the bot.
const geminiToken = "demo-geminidb-token"

// worldOptions shape a World.
type worldOptions struct {
	anchor time.Time     // maintenance windows are placed relative to it
	speed  float64       // the fake cloud's and the bot's clock run this many times faster
	poll   time.Duration // BOT_POLL_INTERVAL
	logs   io.Writer     // where the bot's log goes, besides the World's own tail
	// now is the demo's clock, the bot's and the fake cloud's; nil means
	// one that runs speed times faster than the real one from newWorld on.
	now func() time.Time
	// permalinkBase is the page's URL, under which chat.getPermalink's
	// links point (so they open the thread on the page); "" keeps the fake
	// Slack's.
	permalinkBase string
	// confirmTTL is BOT_CONFIRM_TTL; 0 keeps the bot's default.
	confirmTTL time.Duration
}

// World is the demo's world: the fake Slack and the fake GeminiDB with its
// fleet, a temporary directory for the bot's store, and the real bot
// running against them.
type World struct {
	Slack    *slacktest.Server
	GeminiDB *upgradetest.Server
	Conv     *Conversation

	dir    string
	runBot BotRunner
	opts   worldOptions
	logs   *tailBuffer
	died   chan int // the bot's exit status when it stopped unasked

	restartMu  sync.Mutex // one restart at a time
	mu         sync.Mutex
	approvals  bool
	restarting bool
	bot        *botProc
	changes    int // bumped whenever approvals or restarting change
}

// botProc is one run of the bot.
type botProc struct {
	stop    context.CancelFunc
	done    chan struct{} // closed when the bot returned
	status  int
	stopped bool // Stop asked it to stop
}

// newWorld starts the fakes, seeds the fleet and makes the store's
// directory. The bot is not started yet (Start).
func newWorld(opts worldOptions, runBot BotRunner) (*World, error) {
	if opts.speed <= 0 {
		opts.speed = 1
	}
	if opts.now == nil {
		opts.now = fastClock(opts.speed, time.Now)
	}
	dir, err := os.MkdirTemp("", "geminidb-patch-demo-")
	if err != nil {
		return nil, fmt.Errorf("make a temporary directory for the store: %w", err)
	}
	w := &World{dir: dir, runBot: runBot, opts: opts, logs: newTailBuffer(256 << 10), died: make(chan int, 1)}
	var users []slacktest.Option
	for _, p := range People {
		users = append(users, slacktest.WithUser(slacktest.User{ID: p.ID, Name: p.Name, RealName: p.RealName}))
	}
	// Pings keep a connection alive; on loopback every ten seconds is plenty.
	users = append(users, slacktest.WithPingInterval(10*time.Second))
	if opts.permalinkBase != "" {
		users = append(users, slacktest.WithPermalinkBase(opts.permalinkBase))
	}
	w.Slack, err = slacktest.NewServer(users...)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start the fake Slack: %w", err)
	}
	w.GeminiDB, err = upgradetest.Start(upgradetest.WithToken(geminiToken), upgradetest.WithClock(opts.now), upgradetest.WithJobIDs(jobIDs()))
	if err != nil {
		w.Slack.Close()
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start the fake GeminiDB: %w", err)
	}
	seedFleet(w.GeminiDB, opts.anchor, opts.now())
	w.Conv = newConversation(w.Slack, w.version)
	return w, nil
}

// fastClock is a clock that runs speed times faster than the real one,
// (real) from now on. The bot and the fake cloud share it, so a maintenance
// window the fleet places minutes ahead opens for both at once.
func fastClock(speed float64, real func() time.Time) func() time.Time {
	base := real()
	return func() time.Time {
		return base.Add(time.Duration(float64(real().Sub(base)) * speed))
	}
}

// config is the bot's whole configuration: the fakes' URLs and tokens, the
// demo's people and channel, a store in the temporary directory.
func (w *World) config(approvals bool) config.Config {
	c := config.Defaults()
	c.SlackAppToken = secret.Secret(w.Slack.AppToken())
	c.SlackBotToken = secret.Secret(w.Slack.BotToken())
	c.SlackAPIURL = w.Slack.APIURL()
	c.GeminiDBEndpoint = w.GeminiDB.URL
	c.GeminiDBProjectID = w.GeminiDB.ProjectID
	c.GeminiDBAuthToken = geminiToken
	c.AllowedUsers = []string{Requester.ID, Approver.ID}
	c.AllowedChannels = []string{Channel.ID}
	c.PollInterval = w.opts.poll
	c.Store = filepath.Join(w.dir, "bot.db")
	c.HTTPAddr = "127.0.0.1:0"
	c.ShutdownTimeout = 10 * time.Second
	c.LogFormat, c.LogLevel = "json", "info"
	// The bot runs on the demo's clock, which --speed runs fast, as the
	// fake cloud does.
	c.Now = w.opts.now
	if w.opts.confirmTTL > 0 {
		c.ConfirmTTL = w.opts.confirmTTL
	}
	if approvals {
		c.Approvers = []string{Approver.ID}
	}
	return c
}

// Start runs the bot and waits until its Socket Mode connection is up.
func (w *World) Start(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.startLocked(ctx)
}

func (w *World) startLocked(ctx context.Context) error {
	before := w.Slack.Connections()
	botCtx, stop := context.WithCancel(context.Background())
	p := &botProc{stop: stop, done: make(chan struct{})}
	var logs io.Writer = w.logs
	if w.opts.logs != nil {
		logs = io.MultiWriter(w.logs, w.opts.logs)
	}
	cfg := w.config(w.approvals)
	go func() {
		p.status = w.runBot(botCtx, cfg, logs)
		close(p.done)
		w.mu.Lock()
		unasked := !p.stopped
		w.mu.Unlock()
		if unasked {
			select {
			case w.died <- p.status:
			default:
			}
		}
	}()
	w.bot = p
	// Wait for the connection, or for the bot to give up first.
	waitCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	go func() {
		select {
		case <-p.done:
			cancel()
		case <-waitCtx.Done():
		}
	}()
	if err := w.Slack.WaitConnections(waitCtx, before+1); err != nil {
		select {
		case <-p.done:
			p.stopped, w.bot = true, nil
			return fmt.Errorf("the bot stopped at start with exit status %d; its log ends:\n%s", p.status, w.LogTail(20))
		default:
		}
		p.stopped = true
		stop()
		w.bot = nil
		<-p.done
		return fmt.Errorf("the bot did not connect to the fake Slack: %w", err)
	}
	return nil
}

// stopLocked asks the bot to stop and waits for it.
func (w *World) stopLocked() error {
	p := w.bot
	if p == nil {
		return nil
	}
	w.bot = nil
	p.stopped = true
	p.stop()
	w.mu.Unlock()
	<-p.done
	w.mu.Lock()
	if p.status != 0 {
		return fmt.Errorf("the bot stopped with exit status %d; its log ends:\n%s", p.status, w.LogTail(20))
	}
	return nil
}

// Stop stops the bot and waits for it.
func (w *World) Stop() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stopLocked()
}

// SetApprovals restarts the bot with BOT_APPROVERS set to the approver
// (on) or empty (off). The store is kept, so requests carry on.
func (w *World) SetApprovals(ctx context.Context, on bool) error {
	w.restartMu.Lock()
	defer w.restartMu.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.approvals == on && w.bot != nil {
		return nil
	}
	w.restarting = true
	w.changes++
	defer func() { w.restarting = false; w.changes++ }()
	if err := w.stopLocked(); err != nil {
		return err
	}
	w.approvals = on
	w.changes++
	return w.startLocked(ctx)
}

// Approvals reports whether BOT_APPROVERS is set and whether the bot is
// being restarted right now.
func (w *World) Approvals() (on, restarting bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.approvals, w.restarting
}

// Died delivers the bot's exit status if it stops without being asked.
func (w *World) Died() <-chan int { return w.died }

// version changes whenever the World's settings do (for the page's polling).
func (w *World) version() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.changes
}

// LogTail returns the last n lines of the bot's log.
func (w *World) LogTail(n int) string {
	lines := strings.Split(strings.TrimRight(w.logs.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Close stops the bot and the fakes and removes the temporary directory.
func (w *World) Close() error {
	err := w.Stop()
	w.Slack.Close()
	w.GeminiDB.Close()
	if rerr := os.RemoveAll(w.dir); err == nil {
		err = rerr
	}
	return err
}

// tailBuffer keeps the last max bytes written to it; safe for concurrent use.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
}

func newTailBuffer(max int) *tailBuffer { return &tailBuffer{max: max} }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf.Write(p)
	if extra := t.buf.Len() - t.max; extra > 0 {
		t.buf.Next(extra)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.buf.String()
}
