package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/config"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade/upgradetest"
)

// mixedFleet is a project with patchable Cassandra and Influx instances,
// a Cassandra instance without a patch, one abnormal, and a Redis one,
// tagged env=prod or env=staging. Names share no prefix across groups, so
// that a name found in a message says which instance it is.
type mixedFleet struct {
	cass     []upgrade.Instance // patchable Cassandra: orders-cass-1..4 (1, 2 prod; 3, 4 staging)
	influx   []upgrade.Instance // patchable Influx: metrics-flux-1..3 (staging)
	upToDate upgrade.Instance   // Cassandra without a patch: ledger-cass
	broken   upgrade.Instance   // Cassandra, abnormal: broken-cass
	redis    upgrade.Instance   // Redis: cache-redis
}

func seedMixedFleet(h *harness) mixedFleet {
	var f mixedFleet
	f.cass = h.addInstances("orders-cass", "cassandra", 4)
	f.influx = h.addInstances("metrics-flux", "influxdb", 3)
	f.upToDate = upgradetest.NewInstance("ledger-cass", "cassandra")
	f.upToDate.PatchAvailable = false
	f.broken = upgradetest.NewInstance("broken-cass", "cassandra")
	f.broken.Status = "abnormal"
	f.redis = upgradetest.NewInstance("cache-redis", "redis")
	for _, in := range []upgrade.Instance{f.upToDate, f.broken, f.redis} {
		h.gdb.AddInstance(in)
	}
	for i, in := range f.cass {
		env := "prod"
		if i >= 2 {
			env = "staging"
		}
		h.gdb.SetTags(in.ID, map[string]string{"env": env, "team": "orders"})
	}
	for _, in := range f.influx {
		h.gdb.SetTags(in.ID, map[string]string{"env": "staging"})
	}
	h.gdb.SetTags(f.broken.ID, map[string]string{"env": "prod"})
	return f
}

func (f mixedFleet) all() []upgrade.Instance {
	return append(append(slices.Clone(f.cass), f.influx...), f.upToDate, f.broken, f.redis)
}

// assertNamesExactly checks that text names every instance of want and no
// other instance of the fleet.
func assertNamesExactly(t *testing.T, what, text string, fleet, want []upgrade.Instance) {
	t.Helper()
	for _, in := range fleet {
		has := strings.Contains(text, in.Name)
		if wanted := slices.ContainsFunc(want, func(w upgrade.Instance) bool { return w.ID == in.ID }); has != wanted {
			t.Errorf("%s: names %s = %v, want %v:\n%s", what, in.Name, has, wanted, text)
		}
	}
}

func ids(insts []upgrade.Instance) []string {
	out := make([]string, len(insts))
	for i, in := range insts {
		out[i] = in.ID
	}
	slices.Sort(out)
	return out
}

// engine:cassandra on a mixed fleet plans exactly the patchable Cassandra
// instances, says which matched and why one is blocked; --dry-run sends
// nothing; confirming sends exactly those.
func TestFleetEngineSelector(t *testing.T) {
	h := newHarness(t, nil)
	f := seedMixedFleet(h)

	ack := h.slash(alice, opsChannel, "engine:cassandra --dry-run")
	if got := ackText(ack); !strings.Contains(got, "Selecting engine:cassandra") {
		t.Errorf("ack = %q, want it to say what it selects", got)
	}
	plan := h.reply(ack.ResponseURL, "patch plan")
	text := plan.AllText()
	for _, want := range []string{"for `engine:cassandra`", "6 matched: *4 to patch*", "1 already up to date", "1 blocked (1 status not normal)", "Dry run", "broken-cass"} {
		if !strings.Contains(text, want) {
			t.Errorf("plan lacks %q:\n%s", want, text)
		}
	}
	assertNamesExactly(t, "dry-run plan", text, f.all(), append(slices.Clone(f.cass), f.broken))
	if buttonValue(plan.Blocks, "patch_confirm") != "" {
		t.Error("a dry run has a Confirm button")
	}
	h.assertBatchCalls(0, "--dry-run sends nothing")

	_, ts := h.confirmed("engine:cassandra")
	h.waitBatchCalls(1)
	h.threadText(ts, "Batch results")
	h.assertBatchCalls(1, "4 instances of one engine go in one call")
	if calls := h.gdb.BatchCalls(); !slices.Equal(sorted(calls[0]), ids(f.cass)) {
		t.Errorf("batch call = %v, want exactly the patchable Cassandra instances %v", calls[0], ids(f.cass))
	}
	if r := h.auditEvents("requested"); len(r) < 2 {
		t.Errorf("audit requested events = %d, want 2", len(r))
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// name: and tag: select exactly their instances; kinds AND together and
// named instances are added.
func TestFleetNameAndTagSelectors(t *testing.T) {
	h := newHarness(t, nil)
	f := seedMixedFleet(h)
	cases := []struct {
		text string
		want []upgrade.Instance
		head string
	}{
		{"name:orders-cass-?", f.cass, "4 matched: *4 to patch*"},
		{"name:*-cass", []upgrade.Instance{f.broken}, "2 matched: *0 to patch*, 1 already up to date, 1 blocked"},
		{"tag:env=staging", append(slices.Clone(f.cass[2:]), f.influx...), "5 matched: *5 to patch* (2 Cassandra, 3 Influx)"},
		{"tag:env=staging engine:influxdb", f.influx, "3 matched: *3 to patch*"},
		{"tag:env=prod name:orders-* " + f.influx[0].Name, append(slices.Clone(f.cass[:2]), f.influx[0]), "2 matched: *3 to patch*"},
		{"tag:env=nowhere", nil, "0 matched: *0 to patch*"},
		{"all", append(append(slices.Clone(f.cass), f.influx...), f.broken, f.redis), "10 matched: *7 to patch* (4 Cassandra, 3 Influx) in 2 batch calls, 1 already up to date, 2 blocked"},
	}
	for _, c := range cases {
		ack := h.slash(alice, opsChannel, c.text+" --dry-run")
		text := h.reply(ack.ResponseURL, "patch plan").AllText()
		if !strings.Contains(text, c.head) {
			t.Errorf("%s: plan lacks %q:\n%s", c.text, c.head, text)
		}
		assertNamesExactly(t, c.text, text, f.all(), c.want)
	}
	h.assertBatchCalls(0, "--dry-run sends nothing")
}

// More instances than BOT_MAX_INSTANCES are refused with the count and how
// to narrow the request; nothing is planned.
func TestFleetMaxInstances(t *testing.T) {
	h := newHarness(t, func(c *config.Config) { c.MaxInstances = 5 })
	h.addInstances("orders-cass", "cassandra", 6)
	ack := h.slash(alice, opsChannel, "engine:cassandra")
	msg := h.reply(ack.ResponseURL, "BOT_MAX_INSTANCES").AllText()
	for _, want := range []string{"picks 6 instances", "at most 5", "nothing was done", "name:GLOB"} {
		if !strings.Contains(msg, want) {
			t.Errorf("refusal lacks %q: %s", want, msg)
		}
	}
	ack = h.slash(alice, opsChannel, "orders-cass-1 orders-cass-2 orders-cass-3 orders-cass-4 orders-cass-5 orders-cass-6 --dry-run")
	if msg := h.reply(ack.ResponseURL, "BOT_MAX_INSTANCES").AllText(); !strings.Contains(msg, "You named 6 instances") {
		t.Errorf("refusal of named instances: %s", msg)
	}
	id, _, _ := h.plan(alice, "engine:cassandra name:orders-cass-1 --dry-run")
	if id != "" {
		t.Error("a dry run has a Confirm button")
	}
	if n := len(h.auditEvents("refused")); n != 2 {
		t.Errorf("%d refusals audited, want 2", n)
	}
	h.assertBatchCalls(0, "a refused request sends nothing")
}

// Above BOT_FLEET_GUARD a fleet plan goes canary first: one instance alone,
// the rest only once it completed.
func TestFleetGuardCanary(t *testing.T) {
	h := newHarness(t, func(c *config.Config) { c.FleetGuard = 3 })
	insts := h.addInstances("orders-cass", "cassandra", 5)
	_, plan, _ := h.plan(alice, "engine:cassandra --dry-run")
	if !strings.Contains(plan.AllText(), "canary: 1 instance first") {
		t.Errorf("the plan does not show the automatic canary:\n%s", plan.AllText())
	}
	_, ts := h.confirmed("engine:cassandra")
	h.waitBatchCalls(1)
	h.threadText(ts, "Batch results")
	h.assertBatchCalls(1, "the rest waits for the canary")
	if calls := h.gdb.BatchCalls(); len(calls[0]) != 1 {
		t.Fatalf("first batch call = %v, want the canary alone", calls[0])
	}
	h.gdb.CompleteJob(h.gdb.JobsFor(h.gdb.BatchCalls()[0][0])[0], "3.11.3.5")
	h.waitBatchCalls(2)
	if calls := h.gdb.BatchCalls(); len(calls[1]) != len(insts)-1 {
		t.Errorf("second batch call = %v, want the other %d", calls[1], len(insts)-1)
	}
}

// list --outdated counts the instances with a patch available by engine
// and version, oldest first, with a command for each group.
func TestFleetListOutdated(t *testing.T) {
	h := newHarness(t, nil)
	f := seedMixedFleet(h)
	h.gdb.SetInstance(f.cass[3].ID, func(in *upgrade.Instance) { in.WholeVersion = "3.11.3.1" })
	ack := h.slash(alice, opsChannel, "list --outdated")
	msg := h.reply(ack.ResponseURL, "What is behind")
	text := msg.AllText()
	cassOld, cassNew, influx := strings.Index(text, "Cassandra 3.11.3.1*: 1 instance"), strings.Index(text, "Cassandra 3.11.3.2*: 4 instances"), strings.Index(text, "Influx 3.11.3.2*: 3 instances")
	if cassOld < 0 || cassNew < 0 || influx < 0 || !(cassOld < cassNew && cassNew < influx) {
		t.Errorf("groups missing or not oldest first (%d, %d, %d):\n%s", cassOld, cassNew, influx, text)
	}
	if !strings.Contains(text, "8 instances with a patch available") {
		t.Errorf("total wrong:\n%s", text)
	}
	for _, want := range []string{"/geminidb-patch engine:cassandra name:orders-cass-4*`", "/geminidb-patch engine:influxdb`"} {
		if !strings.Contains(text, want) {
			t.Errorf("no suggestion %q:\n%s", want, text)
		}
	}
	// The suggestion for the 3.11.3.2 group plans exactly it.
	start := strings.Index(text[cassNew:], "`/geminidb-patch ")
	suggest := text[cassNew+start+len("`/geminidb-patch "):]
	suggest = suggest[:strings.Index(suggest, "`")]
	ack = h.slash(alice, opsChannel, suggest+" --dry-run")
	plan := h.reply(ack.ResponseURL, "patch plan").AllText()
	want := append(slices.Clone(f.cass[:3]), f.broken)
	assertNamesExactly(t, "the 3.11.3.2 group's suggestion "+suggest, plan, f.all(), want)
}

// A selector picking 200 instances with long names and console links
// gives a plan within Slack's limits: at most 50 blocks, 3,000 characters
// per text, 10,000 in all.
func TestFleetPlanOf200FitsSlack(t *testing.T) {
	h := newHarness(t, func(c *config.Config) {
		c.ConsoleURL = "https://console.example.com/nosql/?region={region}&project={project_id}#/geminidb/instances/detail/{instance_id}/overview"
	})
	prefix := strings.Repeat("orders-eu-de-", 5)[:58]
	insts := h.addInstances(prefix, "cassandra", 200)
	for i, in := range insts {
		if i%10 == 0 {
			h.gdb.SetInstance(in.ID, func(in *upgrade.Instance) { in.Status = "abnormal" })
		}
	}
	id, plan, _ := h.plan(alice, "engine:cassandra name:orders-*")
	if id == "" {
		t.Fatalf("no Confirm button:\n%s", plan.AllText())
	}
	if !strings.Contains(plan.AllText(), "200 matched: *180 to patch*") {
		t.Errorf("counts wrong:\n%s", plan.AllText())
	}
	var blocks []any
	if err := json.Unmarshal(plan.Blocks, &blocks); err != nil {
		t.Fatal(err)
	}
	if len(blocks) > 50 {
		t.Errorf("%d blocks, Slack allows 50", len(blocks))
	}
	total := 0
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if typ, _ := v["type"].(string); typ == "mrkdwn" || typ == "plain_text" {
				s, _ := v["text"].(string)
				if n := utf8.RuneCountInString(s); n > 3000 {
					t.Errorf("a text object has %d characters, Slack allows 3,000", n)
				}
				total += utf8.RuneCountInString(s)
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
	walk(blocks)
	if total > 10000 {
		t.Errorf("%d characters of text in all, the limit is 10,000", total)
	}
	t.Logf("200-instance plan: %d blocks, %d characters of text", len(blocks), total)
	for _, want := range []string{"more blocked", "more (the thread lists every instance after confirmation)"} {
		if !strings.Contains(plan.AllText(), want) {
			t.Errorf("the plan lacks %q", want)
		}
	}
}

// The App Home shows what is behind: counts by engine and version.
func TestFleetHomeShowsWhatIsBehind(t *testing.T) {
	h := newHarness(t, nil)
	f := seedMixedFleet(h)
	h.gdb.SetInstance(f.cass[3].ID, func(in *upgrade.Instance) { in.WholeVersion = "3.11.3.1" })
	home := h.openHome(alice, 1)
	want := "8 instances · Cassandra 3.11.3.1: 1 · Cassandra 3.11.3.2: 4 · Influx 3.11.3.2: 3"
	if !strings.Contains(home, "*What is behind*") || !strings.Contains(home, want) {
		t.Errorf("the Home lacks %q:\n%s", want, home)
	}
	if strings.Index(home, "*What is behind*") > strings.Index(home, "history` lists") {
		t.Errorf("what is behind is not above the closing hint:\n%s", home)
	}
	calls := h.cloudCalls()
	h.openHome(alice, 2)
	if n := h.cloudCalls() - calls; n != 0 {
		t.Errorf("opening the Home again within a minute made %d GeminiDB calls, want 0 (cached)", n)
	}
}
