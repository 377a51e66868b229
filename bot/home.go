package bot

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/slackevents"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
)

// onEvent handles an Events API event (already acked): opening the App
// Home publishes a fresh Home tab for whoever opened it.
func (b *Bot) onEvent(data any) {
	outer, ok := data.(slackevents.EventsAPIEvent)
	if !ok || outer.Type != slackevents.CallbackEvent {
		return
	}
	ev, ok := outer.InnerEvent.Data.(*slackevents.AppHomeOpenedEvent)
	if !ok || ev.Tab != "home" || ev.User == "" {
		return
	}
	// Someone who may not use the bot is told so once a minute at most;
	// their other openings queue nothing.
	if b.access.refusedNow(ev.User) && !b.homes.refuseDue(ev.User, b.cfg.Now()) {
		return
	}
	// One refresh per person waits at a time: openings while it waits
	// are served by it.
	if !b.homes.start(ev.User) {
		return
	}
	// Nobody waits for an answer: when the queue is full the tab shows
	// what it showed before, and the next opening refreshes it.
	if !b.enqueue(func(ctx context.Context) {
		b.homes.done(ev.User)
		b.publishHome(ctx, ev.User)
	}, nil) {
		b.homes.done(ev.User)
		b.log.Info().Str("user", ev.User).Msg("busy: App Home not refreshed")
	}
}

// homeGate coalesces App Home refreshes per person and rations the
// refusals shown to people who may not use the bot.
type homeGate struct {
	mu      sync.Mutex
	pending map[string]bool
	refused map[string]time.Time
}

// refuseInterval is how often a person who may not use the bot is shown why.
const refuseInterval = time.Minute

// start marks a refresh of user as queued; false when one already waits.
func (g *homeGate) start(user string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.pending == nil {
		g.pending = map[string]bool{}
	}
	if g.pending[user] {
		return false
	}
	g.pending[user] = true
	return true
}

// done clears user's queued refresh (it is about to run, or was dropped).
func (g *homeGate) done(user string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.pending, user)
}

// refuseDue tells whether user, who may not use the bot, is to be shown
// why now (once every refuseInterval).
func (g *homeGate) refuseDue(user string, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.refused == nil {
		g.refused = map[string]time.Time{}
	}
	if at, ok := g.refused[user]; ok && now.Sub(at) < refuseInterval {
		return false
	}
	g.refused[user] = now
	return true
}

// publishHome builds and publishes the Home tab of user.
func (b *Bot) publishHome(ctx context.Context, user string) {
	log := b.log.With().Str("user", user).Logger()
	h := homeData{User: user}
	allowed, err := b.access.userAllowed(ctx, user)
	if err != nil {
		log.Warn().Err(err).Msg("check user-group membership for the App Home")
	}
	h.Allowed = allowed
	if h.Allowed {
		if err := b.homeEntries(ctx, &h); err != nil {
			log.Error().Err(err).Msg("read requests for the App Home")
			return
		}
	}
	view := b.kit.homeView(h, b.cfg.Now())
	if h.Allowed {
		// What is behind goes above the tab's closing hint.
		set := view.Blocks.BlockSet
		view.Blocks.BlockSet = slices.Insert(set, len(set)-1, b.homeBehindBlocks(ctx)...)
	}
	if _, err := b.api.PublishViewContext(ctx, slack.PublishViewContextRequest{UserID: user, View: view}); err != nil {
		log.Error().Err(err).Msg("publish the App Home")
		return
	}
	b.metrics.Commands.WithLabelValues("home").Inc()
}

// homeEntries fills the App Home's groups from the store: the user's plans
// still open, every request being submitted or followed, and the last
// finished patches (done, stopped or rejected; cancelled and expired plans
// changed nothing and are left out).
func (b *Bot) homeEntries(ctx context.Context, h *homeData) error {
	now := b.cfg.Now()
	mine := func(r store.Request) bool { return r.Requester == h.User && now.Before(r.ExpiresAt) }
	// Others' requests only from channels the person is in; when Slack
	// cannot say which, only their own.
	in, err := b.members.of(ctx, h.User)
	if err != nil {
		b.log.Warn().Err(err).Str("user", h.User).Msg("read the channels of an App Home reader: showing only their own requests")
	}
	visible := func(r store.Request) bool { return r.Requester == h.User || in[r.Channel] }
	open, err := b.st.Recent(ctx, homeOpen, mine, store.Planned, store.AwaitingApproval)
	if err != nil {
		return err
	}
	h.Open = b.entries(ctx, open)
	running, err := b.st.Recent(ctx, homeRunning, visible, store.Approved, store.Submitting, store.Submitted, store.Paused)
	if err != nil {
		return err
	}
	h.Running = b.entries(ctx, running)
	finished, err := b.st.Recent(ctx, homeFinished, visible, store.Done, store.Stopped, store.Rejected)
	if err != nil {
		return err
	}
	h.Finished = b.entries(ctx, finished)
	return nil
}

// Bounds of the App Home's other groups; a person has at most
// BOT_MAX_OPEN_PLANS open plans, so the first is generous.
const (
	homeOpen    = 10
	homeRunning = 20
)
