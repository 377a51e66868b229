package bot

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// access decides who may patch, where, and who may approve. User-group
// members (IDs starting with S) are read through usergroups.users.list and
// cached briefly.
type access struct {
	anyone         bool
	users          map[string]bool
	groups         []string
	channels       map[string]bool
	approverUsers  map[string]bool // of every target, for mayClick
	approverGroups []string
	api            SlackAPI
	ttl            time.Duration
	now            func() time.Time
	mu             sync.Mutex
	cache          map[string]groupMembers
	// lookups shares one usergroups.users.list call among all who need the
	// same group at once, so a burst of commands costs one call per group.
	lookups singleflight.Group
}

type groupMembers struct {
	members map[string]bool
	fetched time.Time
}

func newAccess(allowed, channels, approvers []string, api SlackAPI, ttl time.Duration, now func() time.Time) *access {
	a := &access{users: map[string]bool{}, channels: map[string]bool{}, approverUsers: map[string]bool{},
		api: api, ttl: ttl, now: now, cache: map[string]groupMembers{}}
	for _, u := range allowed {
		switch {
		case u == "*":
			a.anyone = true
		case strings.HasPrefix(u, "S"):
			a.groups = append(a.groups, u)
		default:
			a.users[u] = true
		}
	}
	for _, c := range channels {
		a.channels[c] = true
	}
	for _, u := range approvers {
		if strings.HasPrefix(u, "S") {
			a.approverGroups = append(a.approverGroups, u)
		} else {
			a.approverUsers[u] = true
		}
	}
	return a
}

// channelAllowed: an empty allowlist means any channel.
func (a *access) channelAllowed(ch string) bool {
	return len(a.channels) == 0 || a.channels[ch]
}

// staticUser answers from the configuration alone: allowed, or (when user
// groups are configured) that a lookup is needed to decide.
func (a *access) staticUser(user string) (allowed, needLookup bool) {
	if a.anyone || a.users[user] {
		return true, false
	}
	return false, len(a.groups) > 0
}

// mayClick tells, from the configuration and what is cached alone, whether
// a click by user could be acted on at all: false only when it certainly
// cannot (no allowlist, approver list or cached group names the user), so
// such clicks are refused before they take a place in the work queue.
func (a *access) mayClick(user string) bool {
	if ok, _ := a.staticUser(user); ok || a.approverUsers[user] {
		return true
	}
	in, known := a.cachedIn(user, append(slices.Clone(a.groups), a.approverGroups...))
	return in || !known
}

// cachedIn answers from the membership cache whether user is in one of
// groups; known is false when a group's members are not cached (or stale).
func (a *access) cachedIn(user string, groups []string) (in, known bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	for _, g := range groups {
		c, ok := a.cache[g]
		if !ok || now.Sub(c.fetched) >= a.ttl {
			return false, false
		}
		if c.members[user] {
			return true, true
		}
	}
	return false, true
}

// refusedNow tells whether user is certainly not an allowed user, from the
// configuration and the membership cache alone (no Slack call).
func (a *access) refusedNow(user string) bool {
	ok, need := a.staticUser(user)
	if ok {
		return false
	}
	if !need {
		return true
	}
	in, known := a.cachedIn(user, a.groups)
	return known && !in
}

// userAllowed decides, reading user groups when needed.
func (a *access) userAllowed(ctx context.Context, user string) (bool, error) {
	if ok, need := a.staticUser(user); ok || !need {
		return ok, nil
	}
	return a.inGroups(ctx, user, a.groups)
}

// isApprover tells whether user is one of approvers, a target's approvers
// (directly or by group).
func (a *access) isApprover(ctx context.Context, user string, approvers []string) (bool, error) {
	var groups []string
	for _, id := range approvers {
		switch {
		case id == user:
			return true, nil
		case strings.HasPrefix(id, "S"):
			groups = append(groups, id)
		}
	}
	return a.inGroups(ctx, user, groups)
}

func (a *access) inGroups(ctx context.Context, user string, groups []string) (bool, error) {
	for _, g := range groups {
		members, err := a.members(ctx, g)
		if err != nil {
			return false, err
		}
		if members[user] {
			return true, nil
		}
	}
	return false, nil
}

func (a *access) members(ctx context.Context, group string) (map[string]bool, error) {
	a.mu.Lock()
	c, ok := a.cache[group]
	a.mu.Unlock()
	if ok && a.now().Sub(c.fetched) < a.ttl {
		return c.members, nil
	}
	v, err, _ := a.lookups.Do(group, func() (any, error) {
		ids, err := a.api.GetUserGroupMembersContext(ctx, group)
		if err != nil {
			return nil, fmt.Errorf("read members of user group %s: %w", group, err)
		}
		m := make(map[string]bool, len(ids))
		for _, id := range ids {
			m[id] = true
		}
		a.mu.Lock()
		a.cache[group] = groupMembers{members: m, fetched: a.now()}
		a.mu.Unlock()
		return m, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(map[string]bool), nil
}

// targetChannelAllowed tells whether target t may be used in channel ch:
// its allowed_channels, when set, name ch.
func targetChannelAllowed(t Target, ch string) bool {
	return len(t.AllowedChannels) == 0 || slices.Contains(t.AllowedChannels, ch)
}

// targetUserAllowed tells whether user may patch target t: its
// allowed_users, when set, narrow BOT_ALLOWED_USERS (users, user groups
// read through Slack, or "*").
func (a *access) targetUserAllowed(ctx context.Context, t Target, user string) (bool, error) {
	if len(t.AllowedUsers) == 0 {
		return true, nil
	}
	var groups []string
	for _, u := range t.AllowedUsers {
		switch {
		case u == "*" || u == user:
			return true, nil
		case strings.HasPrefix(u, "S"):
			groups = append(groups, u)
		}
	}
	return a.inGroups(ctx, user, groups)
}

// targetRefusal checks a command or click of user in channel on target t
// against t's allowed_channels and allowed_users; it returns the audit
// reason and the message to tell, or "" when allowed. err is set when
// user groups could not be read (refuse, and say so).
func (b *Bot) targetRefusal(ctx context.Context, t Target, user, channel string) (reason, msg string, err error) {
	if !targetChannelAllowed(t, channel) {
		return "target not allowed in channel", fmt.Sprintf("The GeminiDB target `%s` cannot be used in this channel (its allowed_channels: %s); nothing was done.", esc(t.Name), channelList(t.AllowedChannels)), nil
	}
	ok, err := b.access.targetUserAllowed(ctx, t, user)
	if err != nil {
		return "user-group lookup failed", "I could not check whether you may patch this target (Slack user groups could not be read); nothing was done. Try again.", err
	}
	if !ok {
		return "user not allowed for target", fmt.Sprintf("You are not allowed to patch the GeminiDB target `%s` (its allowed_users); nothing was done.", esc(t.Name)), nil
	}
	return "", "", nil
}

// channelList renders channel IDs as Slack channel mentions.
func channelList(ids []string) string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = "<#" + id + ">"
	}
	return strings.Join(out, ", ")
}
