package bot

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/slack-go/slack"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/patch"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// recordingSlack is a SlackAPI that records what the bot said, for unit
// tests of click logic; the end-to-end tests use the fake Slack server.
type recordingSlack struct {
	mu        sync.Mutex
	ephemeral map[string][]string // user → texts
	posts     []string            // channel and thread posts, as text
}

// text is a message's text (its notification text: slack-go keeps the
// blocks of an option out of reach).
func (s *recordingSlack) text(options []slack.MsgOption) string {
	_, values, _ := slack.UnsafeApplyMsgOptions("", "C", "", options...)
	return values.Get("text")
}

func (s *recordingSlack) PostMessageContext(_ context.Context, _ string, options ...slack.MsgOption) (string, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.posts = append(s.posts, s.text(options))
	return "C", "1.000001", nil
}

func (s *recordingSlack) PostEphemeralContext(_ context.Context, _, user string, options ...slack.MsgOption) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ephemeral[user] = append(s.ephemeral[user], s.text(options))
	return "1.000002", nil
}

func (s *recordingSlack) UpdateMessageContext(context.Context, string, string, ...slack.MsgOption) (string, string, string, error) {
	return "C", "1.000001", "", nil
}

func (s *recordingSlack) GetUserGroupMembersContext(context.Context, string, ...slack.GetUserGroupMembersOption) ([]string, error) {
	return nil, nil
}

func (s *recordingSlack) GetPermalinkContext(context.Context, *slack.PermalinkParameters) (string, error) {
	return "", nil
}

func (s *recordingSlack) PublishViewContext(context.Context, slack.PublishViewContextRequest) (*slack.ViewResponse, error) {
	return &slack.ViewResponse{}, nil
}

// Stop is refused to someone who is neither the requester nor an approver
// (and changes nothing); the requester's Stop ends the rollout and names
// what was not sent.
func TestStopClick(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "bot.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	sl := &recordingSlack{ephemeral: map[string][]string{}}
	b := New(Options{Config: Config{AllowedUsers: []string{"UALICE", "UBOB"}, ProjectID: "p"}, Slack: sl, Store: st, Log: zerolog.Nop()})
	life := b.Runner().Lifecycle()

	// A submitted request whose canary went out and whose rest waits.
	a := upgrade.Instance{ID: "i-a", Name: "db-a", Engine: "cassandra"}
	c := upgrade.Instance{ID: "i-c", Name: "db-c", Engine: "cassandra"}
	p := upgrade.Plan{Targets: []upgrade.PlanItem{{Instance: a}, {Instance: c}},
		Batches: []upgrade.Batch{{Engine: "cassandra", InstanceIDs: []string{"i-a", "i-c"}}}}
	r := store.Request{ID: "r-1", Requester: "UALICE", Channel: "COPS", ParentTS: "1.000001", ExpiresAt: time.Now().Add(time.Hour)}
	if _, err := life.Create(t.Context(), r, p, patch.Options{Canary: 1}); err != nil {
		t.Fatal(err)
	}
	_, s, err := life.Confirm(t.Context(), "r-1", "UALICE")
	if err != nil || s.Wave != 0 {
		t.Fatalf("confirm: %v, %+v", err, s)
	}
	if err := life.EndBatch(t.Context(), s, []upgrade.UpgradeResult{{InstanceID: "i-a", JobID: "j-a"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := life.EndSend(t.Context(), s); err != nil {
		t.Fatal(err)
	}

	ctx := context.Background()
	b.onBlockAction(ctx, press(ActionStop, "r-1", "UBOB", "COPS"), 0)
	if got := strings.Join(sl.ephemeral["UBOB"], "\n"); !strings.Contains(got, "Only <@UALICE>") {
		t.Errorf("a stranger's Stop: told %q, want a refusal naming the requester", got)
	}
	if got, _ := st.Get(t.Context(), "r-1"); got.State != store.Submitted {
		t.Errorf("after a refused Stop: state %s, want submitted", got.State)
	}

	b.onBlockAction(ctx, press(ActionStop, "r-1", "UALICE", "COPS"), 0)
	got, _ := st.Get(t.Context(), "r-1")
	if got.State != store.Stopped {
		t.Errorf("after the requester's Stop: state %s, want stopped", got.State)
	}
	if posts := strings.Join(sl.posts, "\n"); !strings.Contains(posts, "Stopped") {
		t.Errorf("no Stopped reply in the thread:\n%s", posts)
	}
	if ro, _ := patch.RolloutOf(got); ro.Stopped == nil || ro.Stopped.By != "UALICE" || strings.Join(ro.Unsent(), ",") != "i-c" {
		t.Errorf("rollout after Stop: %+v, want stopped by UALICE with i-c not sent", ro)
	}
	// Nothing may start after Stop.
	if _, _, err := life.SendWave(t.Context(), "r-1", 1, ""); err == nil {
		t.Error("a wave was claimed after Stop")
	}
}

func (s *recordingSlack) GetConversationsForUserContext(context.Context, *slack.GetConversationsForUserParameters) ([]slack.Channel, string, error) {
	return nil, "", nil
}
