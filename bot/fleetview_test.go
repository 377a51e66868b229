package bot

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/slack-go/slack"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/slacktest"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// textObjects returns every text of blocks: each text object's text
// (mrkdwn or plain_text, in sections, contexts, buttons and their confirm
// dialogs).
func textObjects(t *testing.T, blocks []slack.Block) []string {
	t.Helper()
	raw, err := json.Marshal(blocks)
	if err != nil {
		t.Fatal(err)
	}
	var decoded any
	if err := json.Unmarshal(raw, &decoded); err != nil {
		t.Fatal(err)
	}
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if typ, _ := v["type"].(string); typ == "mrkdwn" || typ == "plain_text" {
				if s, ok := v["text"].(string); ok {
					out = append(out, s)
				}
			}
			for _, c := range v {
				walk(c)
			}
		case []any:
			for _, c := range v {
				walk(c)
			}
		}
	}
	walk(decoded)
	return out
}

// checkFleetLimits checks blocks against Slack's limits for a message:
// at most 50 blocks, 3,000 characters per text object and 10,000 in all.
func checkFleetLimits(t *testing.T, name string, blocks []slack.Block) {
	t.Helper()
	if len(blocks) > 50 {
		t.Errorf("%s: %d blocks, Slack allows 50", name, len(blocks))
	}
	total := 0
	for _, s := range textObjects(t, blocks) {
		n := utf8.RuneCountInString(s)
		if n > 3000 {
			t.Errorf("%s: a text object has %d characters, Slack allows 3,000: %.80q…", name, n, s)
		}
		total += n
	}
	if total > 10000 {
		t.Errorf("%s: %d characters of text in all, the limit is 10,000", name, total)
	}
	raw, _ := json.Marshal(blocks)
	if err := slacktest.ValidateBlocks(raw); err != nil {
		t.Errorf("%s: %v", name, err)
	}
	t.Logf("%s: %d blocks, %d characters of text", name, len(blocks), total)
}

// fleetOf is a plan of n selected instances with 64-character names: a
// quarter blocked (outside their window, abnormal), the rest to patch.
func fleetOf(n int, now time.Time) (upgrade.Plan, Fleet) {
	var refs []string
	res := upgrade.Resolution{Found: map[string]upgrade.Instance{}}
	for i := range n {
		id := fmt.Sprintf("%032xin06", i)
		name := fmt.Sprintf("cass-%s-%04d", strings.Repeat("orders-eu-de-", 5)[:54], i)
		in := upgrade.Instance{ID: id, Name: name, Status: "normal", Engine: "cassandra", Version: "3.11", WholeVersion: "3.11.3.2", PatchAvailable: true, MaintenanceWindow: "00:00-23:59"}
		switch i % 8 {
		case 1:
			in.MaintenanceWindow = "02:00-03:00"
		case 5:
			in.Status = "abnormal"
		}
		res.Found[id] = in
		refs = append(refs, id)
	}
	p := upgrade.NewPlan(refs, res, upgrade.PlanOptions{Now: now})
	return p, Fleet{Selectors: "engine:cassandra name:cass-* tag:env=prod", Matched: n + 17, UpToDate: 17}
}

func TestFleetPlanFitsSlackAt200Instances(t *testing.T) {
	now := time.Date(2026, 1, 15, 12, 0, 0, 0, time.UTC)
	p, f := fleetOf(200, now)
	k := kit{console: "https://console.example.com/geminidb/?region={region}&project={project_id}#/instances/detail/{instance_id}/overview", region: "eu-de", project: strings.Repeat("0a1b2c3d", 4)}
	note := "Rollout: " + strings.Repeat("canary of 1 instance, then the rest when it completed; ", 30)
	for _, v := range []PlanView{
		{RequestID: "r-0123456789ab", ExpiresAt: now.Add(15 * time.Minute), Note: note, Target: "prod-eu-de (project 0a1b…, eu-de)"},
		{RequestID: "r-0123456789ab", DryRun: true},
		{RequestID: "r-0123456789ab", Approval: true, ExpiresAt: now.Add(15 * time.Minute), Scheduled: 25},
	} {
		blocks := k.fleetPlanBlocks(p, v, f)
		checkFleetLimits(t, fmt.Sprintf("fleet plan (dry run %v, approval %v)", v.DryRun, v.Approval), blocks)
		all := strings.Join(textObjects(t, blocks), "\n")
		for _, want := range []string{
			"217 matched: *150 to patch*", "17 already up to date", "50 blocked (25 outside the maintenance window, 25 status not normal)",
			"more blocked", "more (the thread lists every instance after confirmation)",
		} {
			if !strings.Contains(all, want) {
				t.Errorf("fleet plan lacks %q", want)
			}
		}
		if n := strings.Count(all, "cass-orders"); n > fleetPatchShown+50 {
			t.Errorf("fleet plan names %d instances", n)
		}
		if !v.DryRun && buttonValueOf(blocks, ActionConfirm) != v.RequestID {
			t.Error("fleet plan has no Confirm button")
		}
		if v.DryRun && buttonValueOf(blocks, ActionConfirm) != "" {
			t.Error("dry-run fleet plan has a Confirm button")
		}
	}
}

// buttonValueOf is the value of the button with actionID in blocks, "" when
// there is none.
func buttonValueOf(blocks []slack.Block, actionID string) string {
	for _, b := range blocks {
		if a, ok := b.(*slack.ActionBlock); ok {
			for _, e := range a.Elements.ElementSet {
				if btn, ok := e.(*slack.ButtonBlockElement); ok && btn.ActionID == actionID {
					return btn.Value
				}
			}
		}
	}
	return ""
}

func TestFleetPlanListsAtMost20ToPatch(t *testing.T) {
	now := time.Date(2026, 1, 15, 12, 0, 0, 0, time.UTC)
	var refs []string
	res := upgrade.Resolution{Found: map[string]upgrade.Instance{}}
	for i := range 163 {
		id := fmt.Sprintf("%032xin06", i)
		res.Found[id] = upgrade.Instance{ID: id, Name: fmt.Sprintf("c-%03d", i), Status: "normal", Engine: "cassandra", WholeVersion: "3.11.3.2", PatchAvailable: true}
		refs = append(refs, id)
	}
	p := upgrade.NewPlan(refs, res, upgrade.PlanOptions{Now: now})
	all := strings.Join(textObjects(t, kit{}.fleetPlanBlocks(p, PlanView{RequestID: "r-1"}, Fleet{Selectors: "all", Matched: 163})), "\n")
	if n := strings.Count(all, "• *c-"); n != 20 {
		t.Errorf("the plan lists %d instances to patch by name, want 20", n)
	}
	if !strings.Contains(all, "… and 143 more") {
		t.Errorf("the plan does not say \"… and 143 more\":\n%s", all)
	}
}

func TestOutdatedGroupsOldestFirstWithExactSuggestions(t *testing.T) {
	mk := func(name, engine, whole string) upgrade.Instance {
		return upgrade.Instance{ID: name + "-id", Name: name, Engine: engine, WholeVersion: whole, PatchAvailable: true, Status: "normal"}
	}
	insts := []upgrade.Instance{
		mk("cass-orders-1", "cassandra", "3.11.3.3"),
		mk("cass-orders-2", "cassandra", "3.11.3.3"),
		mk("cass-legacy-1", "cassandra", "3.11.10.1"),
		mk("cass-old-a", "cassandra", "3.11.3.2"),
		mk("cass-old-b", "cassandra", "3.11.3.2"),
		mk("cass-odd", "cassandra", "3.11.3.2"),
		mk("influx-1", "influxdb", "1.8.4.1"),
		mk("influx-2", "influxdb", "1.8.4.1"),
	}
	groups := outdatedGroupsOf([]string{"cassandra", "influxdb"}, insts)
	var got []string
	for _, g := range groups {
		got = append(got, fmt.Sprintf("%s %s %d: %s", g.Engine, g.Version, len(g.Instances), g.Suggest))
	}
	want := []string{
		"cassandra 3.11.3.2 3: cass-odd cass-old-a cass-old-b",
		"cassandra 3.11.3.3 2: engine:cassandra name:cass-orders-*",
		"cassandra 3.11.10.1 1: engine:cassandra name:cass-legacy-1*",
		"influxdb 1.8.4.1 2: engine:influxdb",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("groups:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Every suggestion picks exactly its group among the outdated ones.
	for _, g := range groups {
		fields := strings.Fields(g.Suggest)
		var glob string
		for _, f := range fields {
			if s, ok := strings.CutPrefix(f, "name:"); ok {
				glob = s
			}
		}
		if glob == "" {
			continue
		}
		n := 0
		for _, in := range insts {
			if in.Engine == g.Engine && upgrade.MatchGlob(glob, in.Name) {
				n++
				if in.WholeVersion != g.Version {
					t.Errorf("suggestion %q for %s also picks %s at %s", g.Suggest, g.Version, in.Name, in.WholeVersion)
				}
			}
		}
		if n != len(g.Instances) {
			t.Errorf("suggestion %q picks %d, the group has %d", g.Suggest, n, len(g.Instances))
		}
	}
}

func TestOutdatedViewFitsSlack(t *testing.T) {
	var insts []upgrade.Instance
	for i := range 300 {
		name := fmt.Sprintf("%s-%03d", strings.Repeat("x", 58), i)
		insts = append(insts, upgrade.Instance{ID: fmt.Sprintf("%032xin06", i), Name: name, Engine: "cassandra", WholeVersion: fmt.Sprintf("3.11.%d.%d", i%7, i%9), PatchAvailable: true})
	}
	groups := outdatedGroupsOf([]string{"cassandra"}, insts)
	k := kit{console: "https://console.example.com/geminidb/?region={region}#/instances/detail/{instance_id}/overview", region: "eu-de"}
	blocks := k.outdatedBlocks("/geminidb-patch", []string{"cassandra"}, groups, len(insts))
	checkFleetLimits(t, "list --outdated", blocks)
	if !strings.Contains(strings.Join(textObjects(t, blocks), "\n"), "more groups") {
		t.Error("the view does not count the groups left out")
	}
}
