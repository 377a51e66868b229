package slacktest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// HomeView is the Home tab the app published for one user.
type HomeView struct {
	// ID is the view's ID, the same for every publish to the user.
	ID string
	// Hash changes with every publish; views.publish with another hash fails.
	Hash string
	// View is the view as published (a JSON object).
	View json.RawMessage
	// Blocks is the view's blocks (a JSON array).
	Blocks json.RawMessage
	// Publishes counts the views.publish calls that succeeded for the user.
	Publishes int
}

// AllText is the text of the view's blocks (see BlocksText).
func (v HomeView) AllText() string { return BlocksText(v.Blocks) }

// HomeView returns the Home tab last published for user, and whether one was.
func (s *Server) HomeView(user string) (HomeView, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, found := s.homes[user]
	if !found {
		return HomeView{}, false
	}
	return *v, true
}

// publishLocked answers views.publish: it checks the view against Slack's
// limits and keeps it as the user's Home tab.
func (s *Server) publishLocked(form url.Values, call *Call) reply {
	user := form.Get("user_id")
	call.User = user
	raw := form.Get("view")
	if user == "" || raw == "" {
		return slackErr("invalid_arguments", "[ERROR] missing required field: user_id or view")
	}
	if !strings.HasPrefix(user, "U") && !strings.HasPrefix(user, "W") {
		return slackErr("user_not_found")
	}
	var bad *BlocksError
	if errors.As(ValidateView(json.RawMessage(raw)), &bad) {
		return slackErr(bad.Code, bad.Details...)
	}
	var view struct {
		Blocks json.RawMessage `json:"blocks"`
	}
	_ = json.Unmarshal([]byte(raw), &view)
	call.Blocks = view.Blocks
	v := s.homes[user]
	if hash := form.Get("hash"); hash != "" && (v == nil || hash != v.Hash) {
		return slackErr("hash_conflict")
	}
	if v == nil {
		s.nextView++
		v = &HomeView{ID: fmt.Sprintf("V%08d", s.nextView)}
		s.homes[user] = v
	}
	s.nextView++
	v.Hash = fmt.Sprintf("%d.%08d", time.Now().Unix(), s.nextView)
	v.View, v.Blocks = json.RawMessage(raw), view.Blocks
	v.Publishes++
	return ok(map[string]any{"view": viewJSON(v)})
}

// viewJSON is a Home tab view as the Web API and app_home_opened return it.
func viewJSON(v *HomeView) map[string]any {
	out := map[string]any{}
	_ = json.Unmarshal(v.View, &out)
	out["id"], out["hash"], out["team_id"], out["app_id"], out["bot_id"] = v.ID, v.Hash, TeamID, AppID, BotID
	return out
}
