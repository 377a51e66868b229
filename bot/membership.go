package bot

// Who sees what in the App Home: a person's own requests, and others' only
// from channels that person is a member of (as Slack itself shows them),
// read with users.conversations (scopes channels:read and groups:read) and
// cached for a minute.

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/slack-go/slack"
)

// memberTTL is how long a person's channel list is reused.
const memberTTL = time.Minute

// memberPages bounds the users.conversations pages read for one person.
const memberPages = 20

// channelMembers caches, per person, the channels they are a member of.
type channelMembers struct {
	api SlackAPI
	now func() time.Time
	mu  sync.Mutex
	by  map[string]memberEntry
}

type memberEntry struct {
	channels map[string]bool
	at       time.Time
}

func newChannelMembers(api SlackAPI, now func() time.Time) *channelMembers {
	return &channelMembers{api: api, now: now, by: map[string]memberEntry{}}
}

// botInChannel tells whether the bot is a member of channel. A channel
// the cached list lacks is looked up afresh (the bot may just have been
// invited). A DM or the app's own channel counts as in.
func (m *channelMembers) botInChannel(ctx context.Context, channel string) (bool, error) {
	if channel == "" || !strings.HasPrefix(channel, "C") && !strings.HasPrefix(channel, "G") {
		return true, nil
	}
	in, err := m.read(ctx, "", false)
	if err != nil || in[channel] {
		return err == nil, err
	}
	in, err = m.read(ctx, "", true)
	// A bot in no channel at all cannot be told from a Slack that lists
	// none (e.g. a fake Slack whose channels are all implicit): go on, and
	// posting in the channel tells.
	return in[channel] || len(in) == 0, err
}

// of returns the channels user is a member of (public and private).
func (m *channelMembers) of(ctx context.Context, user string) (map[string]bool, error) {
	return m.read(ctx, user, false)
}

// read returns user's channels ("" is the bot), from the cache unless
// fresh is set or the entry is older than memberTTL.
func (m *channelMembers) read(ctx context.Context, user string, fresh bool) (map[string]bool, error) {
	m.mu.Lock()
	e, ok := m.by[user]
	m.mu.Unlock()
	if ok && !fresh && m.now().Sub(e.at) < memberTTL {
		return e.channels, nil
	}
	chans := map[string]bool{}
	cursor := ""
	for range memberPages {
		page, next, err := m.api.GetConversationsForUserContext(ctx, &slack.GetConversationsForUserParameters{
			UserID: user, Cursor: cursor, Types: []string{"public_channel", "private_channel"}, Limit: 200, ExcludeArchived: true,
		})
		if err != nil {
			return nil, fmt.Errorf("users.conversations for %s: %w", user, err)
		}
		for _, c := range page {
			chans[c.ID] = true
		}
		if next == "" {
			break
		}
		cursor = next
	}
	m.mu.Lock()
	m.by[user] = memberEntry{channels: chans, at: m.now()}
	m.mu.Unlock()
	return chans, nil
}

// botIsIn tells whether the bot is a member of the channel of cmd; when it
// is not, the person is told on the command's response_url how to add it,
// and nothing is planned or sent. When Slack cannot say, the command goes
// on (posting in the channel would then tell).
func (b *Bot) botIsIn(ctx context.Context, cmd slack.SlashCommand, a auditInfo, reply func(string, []slack.Block)) bool {
	in, err := b.members.botInChannel(ctx, cmd.ChannelID)
	if err != nil {
		b.log.Warn().Err(err).Str("channel", cmd.ChannelID).Msg("could not check that the bot is in the channel; going on")
		return true
	}
	if in {
		return true
	}
	b.metrics.Commands.WithLabelValues("refused").Inc()
	b.audit("refused", a, "reason", "bot not in channel")
	reply(fmt.Sprintf("I am not a member of this channel, so I could not post the patch's messages here; nothing was done. Add me with `/invite @geminidb-patch` (or the channel's settings → *Integrations* → *Add apps*), then run `%s` again.", esc(b.cfg.Command)), nil)
	return false
}
