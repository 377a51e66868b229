package bot

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/patch"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// press is a click on a button of request id by user in channel.
func press(action, id, user, channel string) slack.InteractionCallback {
	var cb slack.InteractionCallback
	cb.Type = slack.InteractionTypeBlockActions
	cb.User.ID, cb.Channel.ID = user, channel
	cb.ActionCallback.BlockActions = []*slack.BlockAction{{ActionID: action, Value: id}}
	return cb
}

// acks records the envelopes a bot acked, through the ack seam.
type acks struct {
	mu       sync.Mutex
	ids      []string
	payloads []any
}

func (a *acks) ack(_ context.Context, id string, payload any) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ids, a.payloads = append(a.ids, id), append(a.payloads, payload)
	return nil
}

// unitBot is a bot on a fresh bbolt store and the recording Slack, its
// acks recorded, with no socket and no workers: a test runs the queued
// work itself (drain).
func unitBot(t *testing.T, cfg Config) (*Bot, *store.Bolt, *recordingSlack, *acks) {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "bot.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	sl := &recordingSlack{ephemeral: map[string][]string{}}
	a := &acks{}
	b := New(Options{Config: cfg, Slack: sl, Store: st, Log: zerolog.Nop(), Ack: a.ack})
	return b, st, sl, a
}

// drain runs the work the bot queued, as its workers would.
func drain(t *testing.T, b *Bot) {
	t.Helper()
	for {
		select {
		case task := <-b.work:
			task(context.Background())
			b.busy.Add(-1)
		default:
			return
		}
	}
}

// HandleEvent acks an envelope before anything else and queues the slow
// half of a click; a slash command's ack carries its first answer.
func TestHandleEventAcksFirst(t *testing.T) {
	t.Parallel()
	b, _, _, a := unitBot(t, Config{AllowedUsers: []string{"UALICE"}})
	ctx := context.Background()

	cmd := slack.SlashCommand{Command: "/geminidb-patch", Text: "help", UserID: "UALICE", ChannelID: "COPS"}
	b.HandleEvent(ctx, socketmode.Event{Type: socketmode.EventTypeSlashCommand, Data: cmd, Request: &socketmode.Request{EnvelopeID: "env-1"}})
	b.HandleEvent(ctx, socketmode.Event{Type: socketmode.EventTypeInteractive, Data: press(ActionStop, "r-none", "UALICE", "COPS"), Request: &socketmode.Request{EnvelopeID: "env-2"}})

	if got := strings.Join(a.ids, ","); got != "env-1,env-2" {
		t.Fatalf("acked %q, want env-1,env-2", got)
	}
	raw, _ := json.Marshal(a.payloads[0])
	if !strings.Contains(string(raw), "status") {
		t.Errorf("the help command's ack %s does not carry the help text", raw)
	}
	if a.payloads[1] != nil {
		t.Errorf("a click's ack carries %v, want nothing", a.payloads[1])
	}
	if got := b.Activity().Busy; got != 1 {
		t.Errorf("Activity().Busy after a queued click = %d, want 1", got)
	}
	drain(t, b)
	if got := b.Activity().Busy; got != 0 {
		t.Errorf("Activity().Busy after the work ran = %d, want 0", got)
	}
}

// A click from someone outside the allowlists is refused before it takes
// a place in the queue.
func TestHandleEventRefusesStrangersBeforeQueueing(t *testing.T) {
	t.Parallel()
	b, _, _, a := unitBot(t, Config{AllowedUsers: []string{"UALICE"}})
	b.HandleEvent(context.Background(), socketmode.Event{Type: socketmode.EventTypeInteractive,
		Data: press(ActionConfirm, "r-1", "UMALLORY", "COPS"), Request: &socketmode.Request{EnvelopeID: "env-1"}})
	if len(a.ids) != 1 {
		t.Fatalf("acked %v, want the one envelope", a.ids)
	}
	if n := len(b.work); n != 0 {
		t.Errorf("%d tasks queued for a stranger's click, want 0", n)
	}
}

// pausedRequest stores a request of two instances whose canary went out,
// failed, and paused it.
func pausedRequest(t *testing.T, b *Bot, st *store.Bolt) {
	t.Helper()
	life := b.Runner().Lifecycle()
	p := upgrade.Plan{Targets: []upgrade.PlanItem{{Instance: upgrade.Instance{ID: "i-a", Name: "db-a"}}, {Instance: upgrade.Instance{ID: "i-c", Name: "db-c"}}},
		Batches: []upgrade.Batch{{Engine: "cassandra", InstanceIDs: []string{"i-a", "i-c"}}}}
	r := store.Request{ID: "r-1", Requester: "UALICE", Channel: "COPS", ParentTS: "1.000001", ExpiresAt: time.Now().Add(time.Hour)}
	if _, err := life.Create(t.Context(), r, p, patch.Options{Canary: 1}); err != nil {
		t.Fatal(err)
	}
	_, s, err := life.Confirm(t.Context(), "r-1", "UALICE")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.PutJob(t.Context(), store.Job{ID: "j-a", RequestID: "r-1", InstanceID: "i-a", Status: upgrade.JobFailed, Reported: true, SubmittedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := life.EndBatch(t.Context(), s, []upgrade.UpgradeResult{{InstanceID: "i-a", JobID: "j-a"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := life.EndSend(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	if _, err := life.ResultsPosted(t.Context(), "r-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := life.Pause(t.Context(), "r-1"); err != nil {
		t.Fatal(err)
	}
}

// Continue is pressed like Confirm: a stranger is refused and nothing
// changes; the requester's Continue resumes the request (action.go →
// Runner.Continue) and says so in the thread.
func TestContinueClick(t *testing.T) {
	t.Parallel()
	b, st, sl, _ := unitBot(t, Config{AllowedUsers: []string{"UALICE", "UBOB"}})
	pausedRequest(t, b, st)
	ctx := context.Background()

	b.onBlockAction(ctx, press(ActionContinue, "r-1", "UBOB", "COPS"), 0)
	if got := strings.Join(sl.ephemeral["UBOB"], "\n"); !strings.Contains(got, "Only <@UALICE>") {
		t.Errorf("a stranger's Continue: told %q, want a refusal naming the requester", got)
	}
	if got, _ := st.Get(t.Context(), "r-1"); got.State != store.Paused {
		t.Fatalf("after a refused Continue: state %s, want paused", got.State)
	}

	b.onBlockAction(ctx, press(ActionContinue, "r-1", "UALICE", "COPS"), 0)
	got, _ := st.Get(t.Context(), "r-1")
	if ro, _ := patch.RolloutOf(got); ro.Continued == nil || ro.Continued.By != "UALICE" {
		t.Errorf("after the requester's Continue: rollout %+v, want continued by UALICE", ro)
	}
	if posts := strings.Join(sl.posts, "\n"); !strings.Contains(posts, "Continued") {
		t.Errorf("no Continued reply in the thread:\n%s", posts)
	}

	// A second Continue lost the race: it is explained, nothing is sent twice.
	b.onBlockAction(ctx, press(ActionContinue, "r-1", "UALICE", "COPS"), 0)
	if got := sl.ephemeral["UALICE"]; len(got) == 0 {
		t.Error("a second Continue was not answered")
	}
	b.Runner().Wait()
}

// With approvals on, the requester cannot approve their own request, and
// someone who is no approver is told who is.
func TestApproveClickRefusals(t *testing.T) {
	t.Parallel()
	b, st, sl, _ := unitBot(t, Config{AllowedUsers: []string{"*"}, Approvers: []string{"UCAROL"}})
	life := b.Runner().Lifecycle()
	p := upgrade.Plan{Targets: []upgrade.PlanItem{{Instance: upgrade.Instance{ID: "i-a", Name: "db-a"}}},
		Batches: []upgrade.Batch{{Engine: "cassandra", InstanceIDs: []string{"i-a"}}}}
	if _, err := life.Create(t.Context(), store.Request{ID: "r-1", Requester: "UALICE", Channel: "COPS", ExpiresAt: time.Now().Add(time.Hour)}, p, patch.Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := life.RequestApproval(t.Context(), "r-1", "UALICE"); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	b.onBlockAction(ctx, press(ActionApprove, "r-1", "UALICE", "COPS"), 0)
	b.onBlockAction(ctx, press(ActionApprove, "r-1", "UBOB", "COPS"), 0)
	if got := strings.Join(sl.ephemeral["UALICE"], "\n"); !strings.Contains(got, "your own request") {
		t.Errorf("the requester's Approve: told %q, want a refusal", got)
	}
	if got := strings.Join(sl.ephemeral["UBOB"], "\n"); !strings.Contains(got, "Only an approver (<@UCAROL>)") {
		t.Errorf("a non-approver's Approve: told %q, want the approvers named", got)
	}
	if got, _ := st.Get(t.Context(), "r-1"); got.State != store.AwaitingApproval {
		t.Errorf("after refused approvals: state %s, want awaiting_approval", got.State)
	}
}
