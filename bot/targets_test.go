package bot

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/slack-go/slack"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
)

func testTargets(names ...string) *targetSet {
	var ts []Target
	for _, n := range names {
		ts = append(ts, Target{Name: n, Region: "r-" + n, ProjectID: "p-" + n, Channels: []string{"C" + strings.ToUpper(n)}})
	}
	return newTargetSet(Config{Targets: ts}, nil)
}

// A command's target: --target (any case), else the channel's, else the
// only one; otherwise none, and the message lists every target.
func TestPickTarget(t *testing.T) {
	several, one := testTargets("de", "nl"), testTargets("de")
	tests := []struct {
		name          string
		set           *targetSet
		flag, channel string
		want          string // target name; "" = none
		msg           []string
	}{
		{name: "flag", set: several, flag: "NL", channel: "CDE", want: "nl"},
		{name: "channel", set: several, channel: "CNL", want: "nl"},
		{name: "unknown flag", set: several, flag: "fr", channel: "CDE", msg: []string{"no target `fr`", "`de`", "`nl`", "r-nl", "p-de"}},
		{name: "no default here", set: several, channel: "COPS", msg: []string{"Which GeminiDB target", "--target NAME", "`de`", "`nl`"}},
		{name: "the only one", set: one, channel: "COPS", want: "de"},
		{name: "the only one, wrong flag", set: one, flag: "nl", msg: []string{"no target `nl`"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, msg := tt.set.pick(tt.flag, tt.channel)
			switch {
			case tt.want != "" && (got == nil || got.Name != tt.want):
				t.Errorf("got %v (%q), want target %s", got, msg, tt.want)
			case tt.want == "" && got != nil:
				t.Errorf("got target %s, want none", got.Name)
			}
			for _, m := range tt.msg {
				if !strings.Contains(msg, m) {
					t.Errorf("got message %q, want it to contain %q", msg, m)
				}
			}
		})
	}
}

// A request keeps its target; one stored before targets existed belongs to
// the target named default, or else the first; one whose target was
// removed has none.
func TestRequestTarget(t *testing.T) {
	first, withDefault := testTargets("de", "nl"), testTargets("nl", "default")
	if got := first.of(store.Request{Target: "NL"}); got == nil || got.Name != "nl" {
		t.Errorf("of(nl) = %v, want nl", got)
	}
	if got := first.of(store.Request{}); got == nil || got.Name != "de" {
		t.Errorf("of(old request) = %v, want the first target", got)
	}
	if got := withDefault.of(store.Request{}); got == nil || got.Name != "default" {
		t.Errorf("of(old request) = %v, want the target named default", got)
	}
	if got := first.of(store.Request{Target: "gone"}); got != nil {
		t.Errorf("of(gone) = %v, want nil", got.Name)
	}
	if got := first.labelOf(store.Request{Target: "gone"}); got != "gone" {
		t.Errorf("labelOf(gone) = %q, want the name", got)
	}
	if got := first.labelOf(store.Request{Target: "nl"}); got != "nl (r-nl)" {
		t.Errorf("labelOf(nl) = %q, want nl (r-nl)", got)
	}
	if got := testTargets("de").labelOf(store.Request{Target: "de"}); got != "" {
		t.Errorf("labelOf with one target = %q, want \"\" (messages do not change)", got)
	}
}

// Without Config.Targets the bot has one target, default, from ProjectID,
// BatchEngines and Approvers.
func TestDefaultTarget(t *testing.T) {
	s := newTargetSet(Config{ProjectID: "p", BatchEngines: []string{"cassandra"}, Approvers: []string{"U1"}}, nil)
	if len(s.list) != 1 || s.list[0].Name != DefaultTarget || s.list[0].ProjectID != "p" || s.list[0].Approvers[0] != "U1" {
		t.Errorf("got %+v, want one target %q", s.list, DefaultTarget)
	}
	if got, _ := s.pick("", "CANY"); got != s.list[0] {
		t.Errorf("pick = %v, want the only target", got)
	}
}

// The plan and the channel message name the target when given one, and are
// unchanged without.
func TestBlocksNameTheTarget(t *testing.T) {
	text := func(blocks []slack.Block) string {
		raw, err := json.Marshal(blocks)
		if err != nil {
			t.Fatal(err)
		}
		return string(raw)
	}
	const want = "GeminiDB target: *prod-eu-de (eu-de)*"
	r := store.Request{ID: "r-1", Requester: "U1"}
	for name, got := range map[string][2]string{
		"plan":     {text(kit{}.planBlocks(seedPlan(), PlanView{RequestID: "r-1", Target: "prod-eu-de (eu-de)"})), text(kit{}.planBlocks(seedPlan(), PlanView{RequestID: "r-1"}))},
		"parent":   {text(kit{}.parentBlocks(ParentView{Request: r, Plan: seedPlan(), Target: "prod-eu-de (eu-de)"})), text(kit{}.parentBlocks(ParentView{Request: r, Plan: seedPlan()}))},
		"approval": {text(withTarget(kit{}.approvalBlocks(r, seedPlan(), []string{"U2"}), "prod-eu-de (eu-de)")), text(withTarget(kit{}.approvalBlocks(r, seedPlan(), []string{"U2"}), ""))},
	} {
		if !strings.Contains(got[0], want) {
			t.Errorf("%s with a target lacks %q: %s", name, want, got[0])
		}
		if strings.Contains(got[1], "GeminiDB target") {
			t.Errorf("%s without a target names one: %s", name, got[1])
		}
	}
	if got := titled("*Batch results*", "nl (eu-nl)"); got != "GeminiDB target: *nl (eu-nl)*\n*Batch results*" {
		t.Errorf("titled = %q", got)
	}
	if got := titled("*Batch results*", ""); got != "*Batch results*" {
		t.Errorf("titled without a target = %q", got)
	}
}
