// Package bot is the Slack adapter of geminidb-patch-bot: the Socket Mode
// loop, the slash command and button handlers (each parses, checks who may
// press, and calls one patch.Runner verb), the Block Kit messages, the App
// Home, and the patch.Reporter that says in Slack what the engine did.
// Slack types stop here; the rollout engine is package patch.
package bot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/commands"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/patch"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// GeminiDB is what the bot needs from the GeminiDB API (upgrade.Client) of
// one target.
type GeminiDB interface {
	Plan(ctx context.Context, refs []string, opts upgrade.PlanOptions) (upgrade.Plan, error)
	Resolve(ctx context.Context, refs []string) (upgrade.Resolution, error)
	BatchUpgrade(ctx context.Context, ids []string) ([]upgrade.UpgradeResult, error)
	Job(ctx context.Context, id string) (upgrade.Job, error)
	AllInstances(ctx context.Context, datastoreType string) ([]upgrade.Instance, error)
	SelectInstances(ctx context.Context, sel upgrade.Selector) ([]upgrade.Instance, error)
}

// SlackAPI is every Slack Web API call the bot makes (slack.Client has
// them). The bot's logic is tested end to end against the fake Slack
// server; this small interface lets a unit test of click or send logic
// stand in for Slack where that is clearer.
type SlackAPI interface {
	PostMessageContext(ctx context.Context, channelID string, options ...slack.MsgOption) (string, string, error)
	PostEphemeralContext(ctx context.Context, channelID, userID string, options ...slack.MsgOption) (string, error)
	UpdateMessageContext(ctx context.Context, channelID, timestamp string, options ...slack.MsgOption) (string, string, string, error)
	GetUserGroupMembersContext(ctx context.Context, userGroup string, options ...slack.GetUserGroupMembersOption) ([]string, error)
	GetPermalinkContext(ctx context.Context, params *slack.PermalinkParameters) (string, error)
	PublishViewContext(ctx context.Context, req slack.PublishViewContextRequest) (*slack.ViewResponse, error)
	GetConversationsForUserContext(ctx context.Context, params *slack.GetConversationsForUserParameters) ([]slack.Channel, string, error)
}

// Store is what the bot itself reads of the durable state (requests for
// status, history and the App Home, open plans) and the per-person limits
// it keeps there. Every write about a request's life goes through the
// patch.Runner.
type Store interface {
	Get(ctx context.Context, id string) (store.Request, error)
	List(ctx context.Context, states ...store.State) ([]store.Request, error)
	Recent(ctx context.Context, n int, keep func(store.Request) bool, states ...store.State) ([]store.Request, error)
	Jobs(ctx context.Context, requestID string) ([]store.Job, error)
	OpenPlans(ctx context.Context, user string, now time.Time) (int, error)
	Allow(ctx context.Context, key string, limit int, window time.Duration) (bool, error)
	Remember(ctx context.Context, key string, ttl time.Duration) (bool, error)
	LockHolders(ctx context.Context, keys []string) (map[string]string, error)
	Job(ctx context.Context, id string) (store.Job, error)
}

// Storage is the store a bot is built on: what the bot reads and what its
// engine needs (store.Bolt and store.Redis have both).
type Storage interface {
	Store
	patch.Engine
}

var (
	_ GeminiDB = (*upgrade.Client)(nil)
	_ SlackAPI = (*slack.Client)(nil)
	_ Storage  = (*store.Bolt)(nil)
	_ Storage  = (*store.Redis)(nil)
)

// Config is the bot's behaviour, filled from the environment by main.
type Config struct {
	Command         string   // the slash command, "/geminidb-patch"
	ProjectID       string   // shown in messages
	BatchEngines    []string // engines the batch API accepts
	AllowedUsers    []string // user IDs, user-group IDs (S…) or "*"
	AllowedChannels []string // channel IDs; empty = any
	Approvers       []string // user or user-group IDs; empty = the requester confirms
	ConfirmTTL      time.Duration
	PollInterval    time.Duration
	FollowFor       time.Duration // how long a job is followed before the bot gives up
	CommandsPerMin  int           // per user
	MaxOpenPlans    int           // per user
	Workers         int           // slow work running at once; default 8
	QueueSize       int           // slow work waiting; default 64
	GroupCacheTTL   time.Duration // user-group membership cache; default 1m
	BatchTimeout    time.Duration // one batch call; keep it below the shutdown timeout; default 25s
	PollConcurrency int           // job reads in flight at once; default 32
	Retention       time.Duration // final requests older than this are deleted; 0 keeps them
	Canary          int           // the default --canary; 0 = none
	MaxInstances    int           // the most instances one request may plan; default 200
	FleetGuard      int           // above this many instances a canary of 1 and waves are automatic; default 10
	ConsoleURL      string        // console page of an instance: a template with {region}, {project_id}, {instance_id}; "" = no links
	Region          string        // replaces {region} in ConsoleURL
	Now             func() time.Time

	// Targets are the GeminiDB projects and regions the bot patches, each
	// with its own client (Options.GeminiDB is then unused). Without any,
	// the bot has one target, DefaultTarget: ProjectID, BatchEngines and
	// Approvers above, with Options.GeminiDB.
	Targets []Target
}

// The bot's defaults for what Config leaves unset (the engine's own, such
// as PollInterval and BatchTimeout, are patch's: see patch.RunnerOptions).
const (
	DefaultCommandsPerMin = 10
	DefaultMaxOpenPlans   = 3
	DefaultGroupCacheTTL  = time.Minute
	DefaultConfirmTTL     = 15 * time.Minute
)

// withDefaults fills in what c leaves unset, in one place.
func (c Config) withDefaults() Config {
	if c.Command == "" {
		c.Command = commands.Command
	}
	if c.Workers <= 0 {
		c.Workers = DefaultWorkers
	}
	if c.QueueSize <= 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.PollConcurrency <= 0 {
		c.PollConcurrency = patch.DefaultPollConcurrency
	}
	if c.CommandsPerMin <= 0 {
		c.CommandsPerMin = DefaultCommandsPerMin
	}
	if c.MaxOpenPlans <= 0 {
		c.MaxOpenPlans = DefaultMaxOpenPlans
	}
	if c.BatchTimeout <= 0 {
		c.BatchTimeout = patch.DefaultBatchTimeout
	}
	if c.GroupCacheTTL <= 0 {
		c.GroupCacheTTL = DefaultGroupCacheTTL
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.PollInterval <= 0 {
		c.PollInterval = patch.DefaultPollInterval
	}
	if c.FollowFor <= 0 {
		c.FollowFor = patch.DefaultFollowFor
	}
	if c.ConfirmTTL <= 0 {
		c.ConfirmTTL = DefaultConfirmTTL
	}
	if c.MaxInstances <= 0 {
		c.MaxInstances = DefaultMaxInstances
	}
	if c.FleetGuard <= 0 {
		c.FleetGuard = DefaultFleetGuard
	}
	return c
}

// Options are what a Bot is built from.
type Options struct {
	Config Config
	// Slack must carry the bot token (and the app token for Socket Mode).
	Slack SlackAPI
	// Socket is the Socket Mode client built on Slack; nil for a bot that
	// is only driven through HandleEvent (tests).
	Socket *socketmode.Client
	// GeminiDB is the client of the one target when Config.Targets is empty.
	GeminiDB GeminiDB
	Store    Storage
	Log      zerolog.Logger
	Metrics  *Metrics // nil: not registered anywhere
	// Ack acks a Socket Mode envelope; nil: Socket's AckCtx. Tests set it
	// to drive HandleEvent without a socket.
	Ack func(ctx context.Context, envelopeID string, payload any) error
}

// The work pool's default size. Slow work (a plan's lookups, status, list,
// a click) runs on DefaultWorkers goroutines; up to DefaultQueueSize more
// wait. A command that finds the queue full is answered "busy", never
// dropped. Sized so that a burst of 500 commands in one second is queued
// whole even when GeminiDB takes 200 ms per lookup (32 workers drain about
// 160 a second, so about 340 wait), while a full queue holds about 2 MB.
const (
	DefaultWorkers   = 32
	DefaultQueueSize = 1000
)

// Bot is the running Slack bot.
type Bot struct {
	id      string // this process, as owner of the submissions it makes
	cfg     Config
	api     SlackAPI
	sm      *socketmode.Client
	targets *targetSet
	st      Store
	run     *patch.Runner // the engine: every decision and every send goes through it
	ackFn   func(ctx context.Context, envelopeID string, payload any) error
	log     zerolog.Logger
	metrics *Metrics
	access  *access
	kit     kit // builds the messages

	permalinks  permalinkCache
	behindCache behindCache // the App Home's "what is behind", per target

	work      chan func(context.Context)
	notices   chan struct{} // the busy and refusal answers in flight
	closed    atomic.Bool   // the work queue is closed (shutting down)
	queueMu   sync.RWMutex
	ending    endsInFlight // job-end replies being posted, per request: the summary waits for them
	members   *channelMembers
	homes     homeGate // App Home refreshes: coalesced per person
	connected atomic.Bool
	busy      atomic.Int64 // tasks queued or running
}

// New builds a bot from o.
func New(o Options) *Bot {
	cfg := o.Config.withDefaults()
	m := o.Metrics
	if m == nil {
		m = NewMetrics(nil)
	}
	targets := newTargetSet(cfg, o.GeminiDB)
	b := &Bot{
		id:  newID("bot-"),
		cfg: cfg, api: newPacedAPI(o.Slack), sm: o.Socket, targets: targets, st: o.Store, log: o.Log, metrics: m,
		access:  newAccess(cfg.AllowedUsers, cfg.AllowedChannels, targets.approvers(), o.Slack, cfg.GroupCacheTTL, cfg.Now),
		kit:     kit{console: cfg.ConsoleURL, region: cfg.Region, project: cfg.ProjectID},
		work:    make(chan func(context.Context), cfg.QueueSize),
		notices: make(chan struct{}, maxNotices),
		ackFn:   o.Ack,
	}
	b.members = newChannelMembers(b.api, cfg.Now)
	if b.ackFn == nil && o.Socket != nil {
		b.ackFn = o.Socket.AckCtx
	}
	b.run = patch.NewRunner(patch.RunnerOptions{
		Store: o.Store, Fleet: targets, Reporter: reporter{b}, Metrics: engineMetrics{m}, Log: o.Log,
		Now: cfg.Now, PollInterval: cfg.PollInterval, FollowFor: cfg.FollowFor, BatchTimeout: cfg.BatchTimeout,
		PollConcurrency: cfg.PollConcurrency, Retention: cfg.Retention, Explain: b.userError,
	})
	return b
}

// Runner is the bot's engine, for tools and tests that drive it directly.
func (b *Bot) Runner() *patch.Runner { return b.run }

// Activity is how much work the bot has: tasks queued or running (slash
// commands, clicks) and submissions in flight, and how many follower ticks
// have finished. Tests use it to know that everything the bot was asked
// to do so far has been done, instead of sleeping.
type Activity struct {
	Busy  int64
	Ticks int64
}

// Activity reports the bot's current Activity.
func (b *Bot) Activity() Activity {
	return Activity{Busy: b.busy.Load() + b.run.Busy(), Ticks: b.run.Ticks()}
}

// Connected reports whether the Socket Mode connection is up (for /readyz).
func (b *Bot) Connected() bool { return b.connected.Load() }

// ackTimeout bounds how long the event loop waits to queue an ack.
const ackTimeout = 2 * time.Second

// Run connects to Slack and serves until ctx is cancelled or Slack refuses
// the credentials. On cancellation it stops taking events, lets the work in
// flight finish (batch calls are never abandoned half-recorded) and returns nil.
func (b *Bot) Run(ctx context.Context) error {
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	var workers sync.WaitGroup
	for range b.cfg.Workers {
		workers.Go(func() {
			for task := range b.work {
				b.safely(workCtx, task)
				b.busy.Add(-1)
			}
		})
	}
	followCtx, stopFollowing := context.WithCancel(ctx)
	defer stopFollowing()
	followerDone := make(chan struct{})
	go func() {
		defer close(followerDone)
		b.run.Follow(followCtx)
	}()

	sockCtx, cancelSock := context.WithCancel(ctx)
	defer cancelSock()
	sockErr := make(chan error, 1)
	go func() { sockErr <- b.superviseSocket(sockCtx) }()

	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-sockErr:
			runErr = err
			break loop
		case evt, ok := <-b.sm.Events:
			if !ok {
				break loop
			}
			b.HandleEvent(ctx, evt)
		}
	}
	cancelSock()
	stopFollowing()
	b.connected.Store(false)
	// Stop taking new work; finish what is queued and in flight. Reads see a
	// cancelled context and answer quickly; batch submissions run detached.
	b.queueMu.Lock()
	b.closed.Store(true)
	close(b.work)
	b.queueMu.Unlock()
	go func() {
		<-ctx.Done()
		cancelWork()
	}()
	workers.Wait()
	b.run.Wait()
	<-followerDone
	return runErr
}

// HandleEvent routes one Socket Mode event: it acks first and hands slow
// work to the worker pool, so the loop never waits on Slack or GeminiDB.
func (b *Bot) HandleEvent(ctx context.Context, evt socketmode.Event) {
	switch evt.Type {
	case socketmode.EventTypeConnected:
		// slack-go redials by itself after a dropped socket or Slack's
		// disconnect message; a connection count above 0 is such a redial.
		if ce, ok := evt.Data.(*socketmode.ConnectedEvent); ok && ce.ConnectionCount > 0 {
			b.metrics.Reconnects.Inc()
		}
		if b.connected.Swap(true) {
			return
		}
		b.log.Info().Msg("connected to Slack (socket mode)")
	case socketmode.EventTypeConnecting:
		b.connected.Store(false)
	case socketmode.EventTypeConnectionError:
		b.connected.Store(false)
		if ce, ok := evt.Data.(*slack.ConnectionErrorEvent); ok {
			b.log.Warn().Err(ce.ErrorObj).Int("attempt", ce.Attempt).Msg("socket mode connection error")
		}
	case socketmode.EventTypeInvalidAuth:
		b.log.Error().Msg("Slack refused the app token (invalid_auth)")
	case socketmode.EventTypeHello, socketmode.EventTypeDisconnect:
		// Not envelopes: never acked.
		if evt.Type == socketmode.EventTypeHello {
			b.connected.Store(true)
		}
	case socketmode.EventTypeSlashCommand:
		start := time.Now()
		cmd, ok := evt.Data.(slack.SlashCommand)
		if !ok || evt.Request == nil {
			return
		}
		payload := b.onSlashCommand(ctx, cmd, evt.Request.RetryAttempt)
		b.ack(evt.Request, payload, start)
	case socketmode.EventTypeInteractive:
		start := time.Now()
		cb, ok := evt.Data.(slack.InteractionCallback)
		if evt.Request == nil {
			return
		}
		// Busy from before the ack until the click is queued (or refused),
		// so Activity never shows a gap in between.
		b.busy.Add(1)
		defer b.busy.Add(-1)
		b.ack(evt.Request, nil, start)
		if ok && cb.Type == slack.InteractionTypeBlockActions {
			channel := cb.Channel.ID
			if channel == "" {
				channel = cb.Container.ChannelID
			}
			// Clicks that cannot be acted on are refused before they take a
			// place in the queue, so nobody outside the allowlists can fill it.
			if !b.access.channelAllowed(channel) || !b.access.mayClick(cb.User.ID) {
				b.metrics.Commands.WithLabelValues("refused").Inc()
				for _, act := range cb.ActionCallback.BlockActions {
					b.audit("refused", auditInfo{RequestID: act.Value, User: cb.User.ID, Channel: channel},
						"reason", "user or channel not allowed", "action", act.ActionID)
				}
				msg := fmt.Sprintf("You are not allowed to use %s here; your click did nothing.", b.cfg.Command)
				if isApproval(cb) {
					msg = fmt.Sprintf("Only an approver (%s) can approve or reject this request; your click did nothing.", mentionList(b.targets.approvers()))
				}
				b.notify(func(ctx context.Context) { b.tell(ctx, channel, cb.User.ID, msg) })
				return
			}
			// The click is acked, so Slack will not send it again: if it
			// cannot be queued, the clicker must hear so.
			busy := func(ctx context.Context) {
				b.tell(ctx, channel, cb.User.ID, "I am busy with other requests right now; your click did nothing. Click again in a minute.")
			}
			b.enqueue(func(ctx context.Context) { b.onBlockAction(ctx, cb, evt.Request.RetryAttempt) }, busy)
		}
	case socketmode.EventTypeEventsAPI:
		if evt.Request != nil {
			b.ack(evt.Request, nil, time.Now())
		}
		b.onEvent(evt.Data)
	default:
		if evt.Request != nil && evt.Request.EnvelopeID != "" {
			b.ack(evt.Request, nil, time.Now())
		}
	}
}

func (b *Bot) ack(req *socketmode.Request, payload any, start time.Time) {
	if req.EnvelopeID == "" || b.ackFn == nil {
		return
	}
	// The ack is queued for the socket's writer; bound the wait so a dead
	// connection can never stall the event loop (Slack redelivers un-acked
	// envelopes, and redeliveries are harmless).
	ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
	defer cancel()
	err := b.ackFn(ctx, req.EnvelopeID, payload)
	b.metrics.AckLatency.Observe(time.Since(start).Seconds())
	if err != nil {
		b.log.Warn().Err(err).Str("envelope_id", req.EnvelopeID).Msg("ack failed")
	}
}

// enqueue hands slow work to the pool without blocking; when the queue is
// full or closed (shutting down), busy (if given) answers the user instead.
func (b *Bot) enqueue(task func(context.Context), busy func(context.Context)) bool {
	b.queueMu.RLock()
	queued := false
	if !b.closed.Load() {
		select {
		case b.work <- task:
			b.busy.Add(1)
			queued = true
		default:
		}
	}
	b.queueMu.RUnlock()
	if !queued && busy != nil {
		b.notify(busy)
	}
	return queued
}

// maxNotices bounds the busy and refusal answers being sent at once.
const maxNotices = 16

// notify sends a short answer (busy, refused) off the event loop. At most
// maxNotices are in flight: past that the answer is dropped and counted, so
// a flood of refused clicks costs no goroutine each.
func (b *Bot) notify(send func(context.Context)) {
	select {
	case b.notices <- struct{}{}:
	default:
		b.metrics.Commands.WithLabelValues("notice_dropped").Inc()
		b.log.Warn().Msg("too many answers in flight; one busy or refusal answer dropped")
		return
	}
	go func() {
		defer func() { <-b.notices }()
		ctx, cancel := context.WithTimeout(context.Background(), slackWriteTimeout)
		defer cancel()
		send(ctx)
	}()
}

// safely runs a task, turning a panic into a log line so one bad event
// cannot take the bot down.
func (b *Bot) safely(ctx context.Context, task func(context.Context)) {
	defer func() {
		if r := recover(); r != nil {
			b.log.Error().Interface("panic", r).Msg("handler panicked")
		}
	}()
	task(ctx)
}

// slackWriteTimeout bounds a Slack write that must finish even during shutdown.
const slackWriteTimeout = 30 * time.Second

// newID returns a short random ID with a prefix, e.g. r-3f9a1c2b7d.
func newID(prefix string) string {
	var buf [6]byte
	_, _ = rand.Read(buf[:])
	return prefix + hex.EncodeToString(buf[:])
}

// isApproval tells whether a click is on an approver's button.
func isApproval(cb slack.InteractionCallback) bool {
	for _, a := range cb.ActionCallback.BlockActions {
		if a.ActionID == ActionApprove || a.ActionID == ActionReject {
			return true
		}
	}
	return false
}
