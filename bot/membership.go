package bot

// Who sees what in the App Home: a person's own requests, and others' only
// from channels that person is a member of (as Slack itself shows them),
// read with users.conversations (scopes channels:read and groups:read) and
// cached for a minute.

import (
	"context"
	"fmt"
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

// of returns the channels user is a member of (public and private).
func (m *channelMembers) of(ctx context.Context, user string) (map[string]bool, error) {
	m.mu.Lock()
	e, ok := m.by[user]
	m.mu.Unlock()
	if ok && m.now().Sub(e.at) < memberTTL {
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
