// Package bot is the Slack side of geminidb-patch-bot: the Socket Mode loop,
// the slash command and button handlers, the Block Kit messages, the
// two-person approval and the job follower. Slack types stop here.
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

	"github.com/geminidb-patch-bot/geminidb-patch-bot/patch"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// Command is the slash command the bot answers; manifest.yml declares the same.
const Command = "/geminidb-patch"

// GeminiDB is what the bot needs from the GeminiDB API (upgrade.Client) of
// one target.
type GeminiDB interface {
	Plan(ctx context.Context, refs []string, opts upgrade.PlanOptions) (upgrade.Plan, error)
	Resolve(ctx context.Context, refs []string) (upgrade.Resolution, error)
	BatchUpgrade(ctx context.Context, ids []string) ([]upgrade.UpgradeResult, error)
	Job(ctx context.Context, id string) (upgrade.Job, error)
	AllInstances(ctx context.Context, datastoreType string) ([]upgrade.Instance, error)
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
}

// Store is the durable state the bot keeps (store.Bolt).
type Store interface {
	Create(ctx context.Context, r store.Request) error
	Get(ctx context.Context, id string) (store.Request, error)
	Transition(ctx context.Context, id string, from []store.State, to store.State, user string, mutate func(*store.Request)) (store.Request, error)
	TransitionIf(ctx context.Context, id string, from []store.State, to store.State, user string, mutate func(*store.Request) error) (store.Request, error)
	Update(ctx context.Context, id string, mutate func(*store.Request) error) (store.Request, error)
	List(ctx context.Context, states ...store.State) ([]store.Request, error)
	PutJob(ctx context.Context, j store.Job) error
	Allow(ctx context.Context, key string, limit int, window time.Duration) (bool, error)
	Remember(ctx context.Context, key string, ttl time.Duration) (bool, error)
	UpdateJob(ctx context.Context, id string, mutate func(*store.Job) error) (store.Job, error)
	Prune(ctx context.Context, before time.Time, max int) (int, error)
	Recent(ctx context.Context, n int, keep func(store.Request) bool, states ...store.State) ([]store.Request, error)
	Jobs(ctx context.Context, requestID string) ([]store.Job, error)
	ActiveJobs(ctx context.Context) ([]store.Job, error)
	OpenPlans(ctx context.Context, user string, now time.Time) (int, error)
}

var (
	_ GeminiDB = (*upgrade.Client)(nil)
	_ SlackAPI = (*slack.Client)(nil)
	_ Store    = (*store.Bolt)(nil)
	_ Store    = (*store.Redis)(nil)
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
	ConsoleURL      string        // console page of an instance: a template with {region}, {project_id}, {instance_id}; "" = no links
	Region          string        // replaces {region} in ConsoleURL
	Now             func() time.Time

	// Targets are the GeminiDB projects and regions the bot patches, each
	// with its own client (New's db is then unused). Without any, the bot
	// has one target, DefaultTarget: ProjectID, BatchEngines and
	// Approvers above, with New's db.
	Targets []Target
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
	life    *patch.Lifecycle // the request's life: every state change goes through it
	log     zerolog.Logger
	metrics *Metrics
	access  *access
	kit     kit // builds the messages

	permalinks permalinkCache

	work       chan func(context.Context)
	notices    chan struct{}                   // the busy and refusal answers in flight
	runCtx     atomic.Pointer[context.Context] // Run's context: its end means shutting down
	connected  atomic.Bool
	busy       atomic.Int64 // tasks queued or running, and submissions in flight
	houseTicks atomic.Int64 // housekeeping ticks finished
	inflight   sync.WaitGroup
}

// New builds a bot. api must carry the bot token (and the app token for
// Socket Mode); sm is the Socket Mode client built on api; db is the
// GeminiDB client of the one target when cfg.Targets is empty.
func New(cfg Config, api SlackAPI, sm *socketmode.Client, db GeminiDB, st Store, log zerolog.Logger, m *Metrics) *Bot {
	if cfg.Command == "" {
		cfg.Command = Command
	}
	if cfg.Workers <= 0 {
		cfg.Workers = DefaultWorkers
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.PollConcurrency <= 0 {
		cfg.PollConcurrency = 32
	}
	if cfg.CommandsPerMin <= 0 {
		cfg.CommandsPerMin = 10
	}
	if cfg.MaxOpenPlans <= 0 {
		cfg.MaxOpenPlans = 3
	}
	if cfg.BatchTimeout <= 0 {
		cfg.BatchTimeout = 25 * time.Second
	}
	if cfg.GroupCacheTTL <= 0 {
		cfg.GroupCacheTTL = time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 30 * time.Second
	}
	if cfg.FollowFor <= 0 {
		cfg.FollowFor = 6 * time.Hour
	}
	if cfg.ConfirmTTL <= 0 {
		cfg.ConfirmTTL = 15 * time.Minute
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	targets := newTargetSet(cfg, db)
	b := &Bot{
		id:  newID("bot-"),
		cfg: cfg, api: api, sm: sm, targets: targets, st: st, log: log, metrics: m,
		access:  newAccess(cfg.AllowedUsers, cfg.AllowedChannels, targets.approvers(), api, cfg.GroupCacheTTL, cfg.Now),
		kit:     kit{console: cfg.ConsoleURL, region: cfg.Region, project: cfg.ProjectID},
		work:    make(chan func(context.Context), cfg.QueueSize),
		notices: make(chan struct{}, maxNotices),
	}
	b.life = patch.New(st, cfg.Now, b.leaseFor())
	return b
}

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
	return Activity{Busy: b.busy.Load(), Ticks: min(b.houseTicks.Load(), b.targets.pollTicks())}
}

// Connected reports whether the Socket Mode connection is up (for /readyz).
func (b *Bot) Connected() bool { return b.connected.Load() }

// ackTimeout bounds how long the event loop waits to queue an ack.
const ackTimeout = 2 * time.Second

// Run connects to Slack and serves until ctx is cancelled or Slack refuses
// the credentials. On cancellation it stops taking events, lets the work in
// flight finish (batch calls are never abandoned half-recorded) and returns nil.
func (b *Bot) Run(ctx context.Context) error {
	b.runCtx.Store(&ctx)
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
		b.follow(followCtx)
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
	close(b.work)
	go func() {
		<-ctx.Done()
		cancelWork()
	}()
	workers.Wait()
	b.inflight.Wait()
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
	if req.EnvelopeID == "" {
		return
	}
	// The ack is queued for the socket's writer; bound the wait so a dead
	// connection can never stall the event loop (Slack redelivers un-acked
	// envelopes, and redeliveries are harmless).
	ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
	defer cancel()
	err := b.sm.AckCtx(ctx, req.EnvelopeID, payload)
	b.metrics.AckLatency.Observe(time.Since(start).Seconds())
	if err != nil {
		b.log.Warn().Err(err).Str("envelope_id", req.EnvelopeID).Msg("ack failed")
	}
}

// enqueue hands slow work to the pool without blocking; when the queue is
// full, busy (if given) answers the user instead.
func (b *Bot) enqueue(task func(context.Context), busy func(context.Context)) (queued bool) {
	defer func() {
		// The queue is closed during shutdown: treat like full.
		if recover() != nil {
			queued = false
			if busy != nil {
				b.notify(busy)
			}
		}
	}()
	select {
	case b.work <- task:
		b.busy.Add(1)
		return true
	default:
		if busy != nil {
			b.notify(busy)
		}
		return false
	}
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
