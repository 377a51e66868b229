package bot

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/rs/zerolog"
	"github.com/slack-go/slack"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/commands"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/patch"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// historySize is how many requests "history" shows.
const historySize = 20

// allStates are every state a request can be in, for reads across them.
var allStates = []store.State{
	store.Planned, store.AwaitingApproval, store.Approved, store.Submitting, store.Submitted,
	store.Done, store.Cancelled, store.Rejected, store.Expired, store.Stopped,
}

// requestEntry is one request as history and the App Home show it.
type requestEntry struct {
	Request store.Request
	Plan    upgrade.Plan
	Counts  *Counts // nil before any batch answer
	Link    string  // permalink of its channel message (or approval request), "" if it has none
}

// names tells whether request r's plan names instance ref: by the
// reference typed, or a planned or skipped instance's ID or name.
func names(r store.Request, ref string) bool {
	p, _, err := patch.PlanOf(r)
	if err != nil {
		return false
	}
	if slices.Contains(p.Refs, ref) {
		return true
	}
	for _, t := range p.Targets {
		if t.Instance.ID == ref || t.Instance.Name == ref {
			return true
		}
	}
	for _, s := range p.Skipped {
		if s.Instance != nil && (s.Instance.ID == ref || s.Instance.Name == ref) {
			return true
		}
	}
	return false
}

// entries reads what history and the App Home show of each request: its
// plan, its counts (once it has batch answers) and the link to its thread.
// A request whose parts cannot be read is shown with what could be.
func (b *Bot) entries(ctx context.Context, rs []store.Request) []requestEntry {
	out := make([]requestEntry, len(rs))
	for i, r := range rs {
		e := requestEntry{Request: r}
		p, results, err := patch.PlanOf(r)
		if err != nil {
			b.log.Warn().Err(err).Str("request_id", r.ID).Msg("decode request for history")
		}
		e.Plan = p
		if len(results) > 0 {
			jobs, err := b.st.Jobs(ctx, r.ID)
			if err != nil {
				b.log.Warn().Err(err).Str("request_id", r.ID).Msg("read jobs for history")
			}
			c := countJobs(results, jobs)
			e.Counts = &c
		}
		ts := r.ParentTS
		if ts == "" {
			ts = r.ApprovalTS
		}
		e.Link = b.permalinks.get(ctx, b.api, b.log, r.Channel, ts)
		out[i] = e
	}
	return out
}

// runHistory answers "history [<@user>|<instance>]": the last requests of
// the channel it is asked in, newest first.
func (b *Bot) runHistory(ctx context.Context, rid string, cmd slack.SlashCommand, req commands.Request, reply func(string, []slack.Block)) {
	keep := func(r store.Request) bool {
		return r.Channel == cmd.ChannelID &&
			(req.User == "" || r.Requester == req.User) &&
			(req.Instance == "" || names(r, req.Instance))
	}
	// The most recently changed from the state indexes (twice as many as
	// shown, so a request changed a moment ago does not push a newer one
	// out), then the newest by creation.
	rs, err := b.st.Recent(ctx, 2*historySize, keep, allStates...)
	if err != nil {
		b.log.Error().Err(err).Str("request_id", rid).Msg("list requests for history")
		reply(fmt.Sprintf("Something went wrong (request %s).", rid), nil)
		return
	}
	slices.SortStableFunc(rs, func(x, y store.Request) int {
		if c := y.CreatedAt.Compare(x.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(y.ID, x.ID)
	})
	rs = rs[:min(len(rs), historySize)]
	entries := b.entries(ctx, rs)
	b.metrics.Commands.WithLabelValues("history").Inc()
	reply(fmt.Sprintf("History: %s", plural(len(entries), "request")), b.kit.historyBlocks(entries, req.User, req.Instance))
}

// permalinkCache keeps chat.getPermalink's answers: a message's permalink
// never changes, so history and the App Home ask Slack once per message.
type permalinkCache struct {
	mu    sync.Mutex
	links map[string]string // channel/ts → permalink
}

// maxPermalinks bounds the cache; when it is full it starts over.
const maxPermalinks = 5000

// get returns the permalink of message ts in channel, or "" when there is
// none or Slack did not say (logged with debug: a missing link is no error
// worth more).
func (c *permalinkCache) get(ctx context.Context, api SlackAPI, log zerolog.Logger, channel, ts string) string {
	if channel == "" || ts == "" || api == nil {
		return ""
	}
	key := channel + "/" + ts
	c.mu.Lock()
	link, ok := c.links[key]
	c.mu.Unlock()
	if ok {
		return link
	}
	link, err := api.GetPermalinkContext(ctx, &slack.PermalinkParameters{Channel: channel, Ts: ts})
	if err != nil {
		log.Debug().Err(err).Str("channel", channel).Str("ts", ts).Msg("no permalink")
		return ""
	}
	c.mu.Lock()
	if c.links == nil || len(c.links) >= maxPermalinks {
		c.links = map[string]string{}
	}
	c.links[key] = link
	c.mu.Unlock()
	return link
}
