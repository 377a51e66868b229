package bot

import (
	"context"
	"slices"

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
	// Nobody waits for an answer: when the queue is full the tab shows
	// what it showed before, and the next opening refreshes it.
	if !b.enqueue(func(ctx context.Context) { b.publishHome(ctx, ev.User) }, nil) {
		b.log.Info().Str("user", ev.User).Msg("busy: App Home not refreshed")
	}
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
	open, err := b.st.Recent(ctx, homeOpen, mine, store.Planned, store.AwaitingApproval)
	if err != nil {
		return err
	}
	h.Open = b.entries(ctx, open)
	running, err := b.st.Recent(ctx, homeRunning, nil, store.Approved, store.Submitting, store.Submitted, store.Paused)
	if err != nil {
		return err
	}
	h.Running = b.entries(ctx, running)
	finished, err := b.st.Recent(ctx, homeFinished, nil, store.Done, store.Stopped, store.Rejected)
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
