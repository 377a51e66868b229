package slacktest

import (
	"encoding/base64"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Channel is a conversation the Server knows, with its members. A test adds
// one with AddChannel or WithChannel; channels it does not add are public
// channels the bot and everyone are in, unless Limits.UnknownChannels is set.
type Channel struct {
	// ID is the channel ID, e.g. "C123" (public) or "G123" (private).
	ID string
	// Name is the channel name without "#"; defaults to the lower-cased ID.
	Name string
	// Private marks a private channel: only members see it, and a bot that
	// is not a member gets channel_not_found, not not_in_channel.
	Private bool
	// Members are the user IDs in the channel; include BotUserID for the bot.
	Members []string
	// Everyone makes every user a member, as in #general; the bot is a
	// member only if Members holds BotUserID.
	Everyone bool
}

// hasMember tells whether user is in c.
func (c *Channel) hasMember(user string) bool {
	return slices.Contains(c.Members, user) || (c.Everyone && user != BotUserID)
}

// WithChannel adds a channel at start (see AddChannel).
func WithChannel(c Channel) Option {
	return func(s *Server) { s.channels[c.ID] = normalizeChannel(c) }
}

// AddChannel adds or replaces a channel. The bot is in it only if Members
// holds BotUserID: chat.postMessage there answers not_in_channel (public)
// or channel_not_found (private), chat.postEphemeral also user_not_in_channel
// for a user who is not a member, and users.conversations lists it for its
// members.
func (s *Server) AddChannel(c Channel) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.channels[c.ID] = normalizeChannel(c)
	s.notifyLocked()
}

// Join adds users to a channel added with AddChannel; it reports whether the
// channel is known.
func (s *Server) Join(channel string, users ...string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.channels[channel]
	if c == nil {
		return false
	}
	for _, u := range users {
		if !slices.Contains(c.Members, u) {
			c.Members = append(c.Members, u)
		}
	}
	s.notifyLocked()
	return true
}

// Leave removes users from a channel added with AddChannel; it reports
// whether the channel is known.
func (s *Server) Leave(channel string, users ...string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.channels[channel]
	if c == nil {
		return false
	}
	c.Members = slices.DeleteFunc(c.Members, func(m string) bool { return slices.Contains(users, m) })
	s.notifyLocked()
	return true
}

func normalizeChannel(c Channel) *Channel {
	if c.Name == "" {
		c.Name = strings.ToLower(c.ID)
	}
	c.Members = slices.Clone(c.Members)
	return &c
}

// isDM tells whether a channel parameter names the app's DM with a user.
func isDM(channel string) bool {
	return strings.HasPrefix(channel, "D") || strings.HasPrefix(channel, "U") || strings.HasPrefix(channel, "W")
}

// access is what the bot may do in a channel.
type access int

const (
	accessMember   access = iota // the bot is in it (or it is a DM)
	accessOutsider               // a public channel the bot is not in
	accessHidden                 // private without the bot, or unknown
)

// accessLocked is the bot's access to channel.
func (s *Server) accessLocked(channel string) access {
	if isDM(channel) {
		return accessMember
	}
	c := s.channels[channel]
	switch {
	case c == nil && s.rules.UnknownChannels:
		return accessHidden
	case c == nil, slices.Contains(c.Members, BotUserID):
		return accessMember
	case c.Private:
		return accessHidden
	}
	return accessOutsider
}

// postAccessLocked is the error chat.postMessage and chat.postEphemeral answer
// for channel, or "".
func (s *Server) postAccessLocked(channel string) string {
	switch s.accessLocked(channel) {
	case accessOutsider:
		return "not_in_channel"
	case accessHidden:
		return "channel_not_found"
	}
	return ""
}

// isMemberLocked tells whether user is in channel (always, for channels the
// test did not add).
func (s *Server) isMemberLocked(channel, user string) bool {
	c := s.channels[channel]
	return c == nil || c.hasMember(user)
}

// usersConversationsLocked answers users.conversations: the channels a user
// (default: the bot) is a member of that the bot token can see, of the
// requested types, in ID order, paged by cursor.
func (s *Server) usersConversationsLocked(form url.Values) reply {
	user := form.Get("user")
	if user == "" {
		user = BotUserID
	}
	if !strings.HasPrefix(user, "U") && !strings.HasPrefix(user, "W") {
		return slackErr("user_not_found")
	}
	types := []string{"public_channel"}
	if t := form.Get("types"); t != "" {
		types = strings.Split(t, ",")
	}
	var public, private bool
	for _, t := range types {
		switch strings.TrimSpace(t) {
		case "public_channel":
			public = true
		case "private_channel":
			private = true
		case "mpim", "im": // the fake has none of these
		default:
			return slackErr("invalid_types")
		}
	}
	for scope, needed := range map[string]bool{"channels:read": public, "groups:read": private} {
		if needed && !slices.Contains(s.scopeList(), scope) {
			return reply{status: 200, body: map[string]any{
				"ok": false, "error": "missing_scope", "needed": scope, "provided": s.scopeHeader(),
			}}
		}
	}
	limit := 100
	if l := form.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 {
			return slackErr("invalid_limit")
		}
		limit = min(n, 1000)
	}
	start := 0
	if c := form.Get("cursor"); c != "" {
		raw, err := base64.StdEncoding.DecodeString(c)
		n, aerr := strconv.Atoi(strings.TrimPrefix(string(raw), "offset:"))
		if err != nil || aerr != nil || !strings.HasPrefix(string(raw), "offset:") || n < 0 {
			return slackErr("invalid_cursor")
		}
		start = n
	}
	var ids []string
	for id, c := range s.channels {
		// A bot token sees a private channel only if the bot is in it.
		visible := (public && !c.Private) || (private && c.Private && slices.Contains(c.Members, BotUserID))
		if visible && c.hasMember(user) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	page := []any{}
	for i := start; i < len(ids) && i < start+limit; i++ {
		page = append(page, channelJSON(s.channels[ids[i]]))
	}
	next := ""
	if start+limit < len(ids) {
		next = base64.StdEncoding.EncodeToString([]byte("offset:" + strconv.Itoa(start+limit)))
	}
	return ok(map[string]any{"channels": page, "response_metadata": map[string]any{"next_cursor": next}})
}

// channelJSON is a channel as the conversations methods return it.
func channelJSON(c *Channel) map[string]any {
	return map[string]any{
		"id": c.ID, "name": c.Name, "name_normalized": c.Name,
		"is_channel": !c.Private, "is_group": false, "is_im": false, "is_mpim": false,
		"is_private": c.Private, "is_archived": false, "is_general": false, "is_shared": false,
		"is_member": slices.Contains(c.Members, BotUserID), "created": 1700000000, "creator": "U0CREATOR",
		"context_team_id": TeamID, "num_members": len(c.Members),
	}
}
