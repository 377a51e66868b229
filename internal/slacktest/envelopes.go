package slacktest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// slashPayload is a slash_commands payload, fields in Slack's order.
type slashPayload struct {
	Token               string `json:"token"`
	TeamID              string `json:"team_id"`
	TeamDomain          string `json:"team_domain"`
	ChannelID           string `json:"channel_id"`
	ChannelName         string `json:"channel_name"`
	UserID              string `json:"user_id"`
	UserName            string `json:"user_name"`
	Command             string `json:"command"`
	Text                string `json:"text"`
	APIAppID            string `json:"api_app_id"`
	IsEnterpriseInstall string `json:"is_enterprise_install"`
	ResponseURL         string `json:"response_url"`
	TriggerID           string `json:"trigger_id"`
}

// verificationToken is the deprecated token Slack still puts in payloads.
const verificationToken = "fake-verification-token"

// SlashCommand sends a slash_commands envelope, as Slack does when a user runs
// cmd, and waits for its ack. The Ack carries the response URL the payload used.
// Like Slack with no app connected, it fails at once with ErrNoConnection when no
// connection is open, so tests call WaitConnections first.
func (s *Server) SlashCommand(ctx context.Context, cmd SlashCommand) (Ack, error) {
	s.fillIDs(&cmd.TeamID, &cmd.TriggerID, &cmd.ResponseURL, cmd.ChannelID, "")
	p := slashPayload{
		Token:               verificationToken,
		TeamID:              cmd.TeamID,
		TeamDomain:          TeamDomain,
		ChannelID:           cmd.ChannelID,
		ChannelName:         orLower(cmd.ChannelName, cmd.ChannelID),
		UserID:              cmd.UserID,
		UserName:            orLower(cmd.UserName, cmd.UserID),
		Command:             cmd.Command,
		Text:                cmd.Text,
		APIAppID:            AppID,
		IsEnterpriseInstall: "false", // Slack sends this one as a string
		ResponseURL:         cmd.ResponseURL,
		TriggerID:           cmd.TriggerID,
	}
	raw, err := json.Marshal(p)
	if err != nil {
		return Ack{}, err
	}
	return s.send(ctx, "slash_commands", raw, cmd.RetryAttempt, cmd.ResponseURL)
}

// BlockAction sends an interactive envelope with a block_actions payload, as
// Slack does when a user clicks a button, and waits for its ack. retryAttempt > 0
// marks it as Slack's redelivery. If MessageTS names a channel message the Server
// knows, the payload carries that message as Slack's does.
func (s *Server) BlockAction(ctx context.Context, a BlockAction, retryAttempt int) (Ack, error) {
	original := a.MessageTS
	if a.Ephemeral {
		original = ""
	}
	s.fillIDs(&a.TeamID, &a.TriggerID, &a.ResponseURL, a.ChannelID, original)
	if a.Text == "" {
		a.Text = a.ActionID
	}
	userName := orLower(a.UserName, a.UserID)
	container := map[string]any{"type": "message", "message_ts": a.MessageTS, "channel_id": a.ChannelID, "is_ephemeral": a.Ephemeral}
	if a.ThreadTS != "" {
		container["thread_ts"] = a.ThreadTS
	}
	now := time.Now()
	payload := map[string]any{
		"type":                  "block_actions",
		"user":                  map[string]any{"id": a.UserID, "username": userName, "name": userName, "team_id": a.TeamID},
		"api_app_id":            AppID,
		"token":                 verificationToken,
		"container":             container,
		"trigger_id":            a.TriggerID,
		"team":                  map[string]any{"id": a.TeamID, "domain": TeamDomain},
		"enterprise":            nil,
		"is_enterprise_install": false,
		"channel":               map[string]any{"id": a.ChannelID, "name": orLower(a.ChannelName, a.ChannelID)},
		"state":                 map[string]any{"values": map[string]any{}},
		"response_url":          a.ResponseURL,
		"actions": []any{map[string]any{
			"action_id": a.ActionID,
			"block_id":  a.BlockID,
			"text":      map[string]any{"type": "plain_text", "text": a.Text, "emoji": true},
			"value":     a.Value,
			"type":      "button",
			"action_ts": fmt.Sprintf("%d.%06d", now.Unix(), now.Nanosecond()/1000),
		}},
	}
	if original != "" {
		s.mu.Lock()
		if m := s.findLocked(a.ChannelID, original); m != nil {
			payload["message"] = messageJSON(m)
		}
		s.mu.Unlock()
	}
	raw, err := json.Marshal(payload)
	if err != nil {
		return Ack{}, err
	}
	return s.send(ctx, "interactive", raw, retryAttempt, a.ResponseURL)
}

// fillIDs fills in an envelope's defaults: team, trigger ID and a response URL for
// channel whose replace_original acts on original.
func (s *Server) fillIDs(team, trigger, respURL *string, channel, original string) {
	if *team == "" {
		*team = TeamID
	}
	if *trigger == "" {
		id := strings.ReplaceAll(newID(), "-", "")
		*trigger = fmt.Sprintf("%d.%d.%s", time.Now().Unix(), 1000+len(id), id[:20])
	}
	if *respURL == "" {
		s.mu.Lock()
		*respURL = s.mintResponseURLLocked(channel, original)
		s.mu.Unlock()
	}
}

func orLower(s, fallback string) string {
	if s != "" {
		return s
	}
	return strings.ToLower(fallback)
}

// Event sends an events_api envelope carrying event (the inner event, e.g.
// {"type":"app_home_opened",…}) in Slack's event_callback wrapper, and waits
// for its ack. With Limits.EventRetries, an envelope not acked within the
// ack timeout is redelivered (retry_attempt 1, 2, …, retry_reason
// "timeout") until one is acked or the retries run out; the Ack tells which
// delivery was acked.
func (s *Server) Event(ctx context.Context, event map[string]any) (Ack, error) {
	now := time.Now()
	id := strings.ToUpper(strings.ReplaceAll(newID(), "-", ""))[:10]
	payload := map[string]any{
		"token":      verificationToken,
		"team_id":    TeamID,
		"api_app_id": AppID,
		"event":      event,
		"type":       "event_callback",
		"event_id":   "Ev" + id,
		"event_time": now.Unix(),
		"authorizations": []any{map[string]any{
			"enterprise_id": nil, "team_id": TeamID, "user_id": BotUserID, "is_bot": true, "is_enterprise_install": false,
		}},
		"is_ext_shared_channel": false,
		"event_context":         "4-fake-" + id,
	}
	raw, err := json.Marshal(payload)
	if err != nil {
		return Ack{}, err
	}
	s.mu.Lock()
	retries := slices.Clone(s.rules.EventRetries)
	s.mu.Unlock()
	if len(retries) == 0 {
		return s.send(ctx, "events_api", raw, 0, "")
	}
	// Like Slack, give each delivery the ack timeout, then redeliver the
	// same event (same event_id) in a new envelope.
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, s.ackTimeout)
		ack, err := s.send(actx, "events_api", raw, attempt, "")
		cancel()
		if err == nil || attempt == len(retries) || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return ack, err
		}
		select {
		case <-ctx.Done():
			return Ack{}, fmt.Errorf("slacktest: redeliver event %s: %w", payload["event_id"], ctx.Err())
		case <-s.done:
			return Ack{}, fmt.Errorf("slacktest: redeliver event %s: server closed", payload["event_id"])
		case <-time.After(retries[attempt]):
		}
	}
}

// AppHomeOpened sends the app_home_opened event Slack sends when user opens
// the app's tab ("home" or "messages"), and waits for its ack. Like Slack's,
// the event carries the Home tab last published for the user, if any.
func (s *Server) AppHomeOpened(ctx context.Context, user, tab string) (Ack, error) {
	now := time.Now()
	event := map[string]any{
		"type":     "app_home_opened",
		"user":     user,
		"channel":  "D" + strings.TrimLeft(user, "UW") + "APP",
		"tab":      tab,
		"event_ts": fmt.Sprintf("%d.%06d", now.Unix(), now.Nanosecond()/1000),
	}
	s.mu.Lock()
	if v := s.homes[user]; v != nil && tab == "home" {
		event["view"] = viewJSON(v)
	}
	s.mu.Unlock()
	return s.Event(ctx, event)
}
