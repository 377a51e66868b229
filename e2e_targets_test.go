package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/config"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/slacktest"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade/upgradetest"
)

// Two targets, each its own fake GeminiDB: prod-eu-de (token auth, the
// harness's fake) is the default target of deChannel, prod-eu-nl (IAM
// password login, another project) of nlChannel; opsChannel is the default
// of none.
const (
	deChannel    = "CEUDE"
	nlChannel    = "CEUNL"
	stageChannel = "CSTAGE"
	deTarget     = "prod-eu-de"
	nlTarget     = "prod-eu-nl"
	deLabel      = "prod-eu-de (eu-de)"
	nlLabel      = "prod-eu-nl (eu-nl)"
	nlProject    = "4b2a0c19d8e74f6a9b3c5d7e1f2a4b6c"
	nlPassword   = "eu-nl-iam-secret-password-8812"
)

// targetsHarness is the harness with BOT_TARGETS_FILE naming two targets
// (and staging, a third on the first fake without approval); nl is the
// second target's fake. extra is added to each target's entry, e.g. its
// approvers. tweak edits the environment as newHarness's does.
type targetsHarness struct {
	*harness
	nl *upgradetest.Server
}

func newTargetsHarness(t *testing.T, deExtra, nlExtra string, tweak func(c *config.Config)) *targetsHarness {
	t.Helper()
	th := &targetsHarness{}
	h := newHarness(t, func(c *config.Config) {
		th.nl = upgradetest.NewServer(t, upgradetest.WithIAMUser("OTC-EU-NL", "patch-bot", nlPassword), upgradetest.WithProjectID(nlProject))
		file := filepath.Join(t.TempDir(), "targets.yaml")
		yaml := fmt.Sprintf(`targets:
  - name: %s
    region: eu-de
    endpoint: %s
    project_id: %s
    auth: {token_env: EU_DE_TOKEN}
    channels: [%s]
%s
  - name: %s
    region: eu-nl
    endpoint: %s
    project_id: %s
    batch_engines: [cassandra, influxdb]
    auth:
      iam: {endpoint: %s, username: patch-bot, password_env: EU_NL_PASSWORD, domain: OTC-EU-NL}
    channels: [%s]
%s
  - name: staging
    region: eu-de
    endpoint: %s
    project_id: %s
    auth: {token_env: EU_DE_TOKEN}
    channels: [%s]
    approvers: []
`, deTarget, c.GeminiDBEndpoint, c.GeminiDBProjectID, deChannel, deExtra,
			nlTarget, th.nl.URL, nlProject, th.nl.IAMURL, nlChannel, nlExtra,
			c.GeminiDBEndpoint, c.GeminiDBProjectID, stageChannel)
		if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		// The file names the variables of its secrets; c.LookupEnv
		// answers them, so the process environment is not touched.
		c.LookupEnv = config.MapLookup(map[string]string{"EU_DE_TOKEN": c.GeminiDBAuthToken.Reveal(), "EU_NL_PASSWORD": nlPassword})
		c.GeminiDBEndpoint, c.GeminiDBProjectID, c.GeminiDBAuthToken = "", "", ""
		c.TargetsFile = file
		if tweak != nil {
			tweak(c)
		}
	})
	th.harness = h
	// The harness waited for one target's start-up call; wait for all three.
	th.waitStartupCalls(3)
	t.Cleanup(func() {
		for _, c := range h.slack.Calls() {
			if strings.Contains(c.AllText(), nlPassword) {
				t.Errorf("the second target's password appears in a Slack message")
			}
		}
		if strings.Contains(h.logs.String(), nlPassword) {
			t.Errorf("the second target's password appears in the logs")
		}
	})
	return th
}

// waitStartupCalls waits until n targets answered (or failed) the start-up
// call that learns the fleet's size.
func (h *harness) waitStartupCalls(n int) {
	h.t.Helper()
	if err := h.slack.WaitFor(h.ctx(), fmt.Sprintf("%d start-up calls", n), func(*slacktest.Server) bool {
		return h.main.sized.Load() >= int64(n)
	}); err != nil {
		h.t.Fatalf("%v\nlogs:\n%s", err, h.logs.String())
	}
}

// planIn sends the command in channel and waits for the plan; it returns the
// request ID of its Confirm button ("" if none), the reply and the ack.
func (h *harness) planIn(user, channel, text string) (string, slacktest.Call, slacktest.Ack) {
	h.t.Helper()
	ack := h.slash(user, channel, text)
	c := h.reply(ack.ResponseURL, "patch plan")
	return buttonValue(c.Blocks, "patch_confirm"), c, ack
}

// clickIn presses a button as user in channel.
func (h *harness) clickIn(user, channel, action, requestID, responseURL string) {
	h.t.Helper()
	if _, err := h.slack.BlockAction(h.ctx(), slacktest.BlockAction{
		UserID: user, ChannelID: channel, ActionID: action, Value: requestID, ResponseURL: responseURL,
		Ephemeral: action == "patch_confirm" || action == "patch_cancel",
	}, 0); err != nil {
		h.t.Fatalf("click %s: %v", action, err)
	}
}

// messageIn waits for a message in channel for which match holds.
func (h *harness) messageIn(channel, desc string, match func(slacktest.Message) bool) slacktest.Message {
	h.t.Helper()
	var found slacktest.Message
	if err := h.slack.WaitFor(h.ctx(), desc, func(s *slacktest.Server) bool {
		for _, m := range s.Messages(channel) {
			if match(m) {
				found = m
				return true
			}
		}
		return false
	}); err != nil {
		h.t.Fatalf("%v\nlogs:\n%s", err, h.logs.String())
	}
	return found
}

// parentIn waits for the channel message of request id in channel.
func (h *harness) parentIn(channel, id string) slacktest.Message {
	h.t.Helper()
	return h.messageIn(channel, "channel message for "+id, func(m slacktest.Message) bool { return isParent(m, id) })
}

// submitIn plans and confirms text as alice in channel (no approvers) and
// waits for the batch results; it returns the request ID and the parent ts.
func (h *harness) submitIn(channel, text string) (string, string) {
	h.t.Helper()
	id, plan, ack := h.planIn(alice, channel, text)
	if id == "" {
		h.t.Fatalf("plan has no Confirm button:\n%s", plan.AllText())
	}
	h.clickIn(alice, channel, "patch_confirm", id, ack.ResponseURL)
	ts := h.parentIn(channel, id).TS
	h.threadIn(channel, ts, "Batch results")
	return id, ts
}

// twin adds an instance named name to both fakes (different IDs), so only
// the target decides which one a command means.
func (th *targetsHarness) twin(name string) (de, nl upgrade.Instance) {
	de, nl = upgradetest.NewInstance(name, "cassandra"), upgradetest.NewInstance(name, "cassandra")
	th.gdb.AddInstance(de)
	th.nl.AddInstance(nl)
	return de, nl
}

// A command in each target's channel patches only in that target, and
// every message about the request names the target; the jobs are followed
// to the summary with each target's own client.
func TestTargetsChannelPicksTarget(t *testing.T) {
	t.Parallel()
	th := newTargetsHarness(t, "", "", nil)
	de, nl := th.twin("cass-orders")

	type run struct {
		channel, label, other string
		fake                  *upgradetest.Server
		inst                  upgrade.Instance
		notInst               upgrade.Instance
	}
	for _, r := range []run{
		{deChannel, deLabel, nlLabel, th.gdb, de, nl},
		{nlChannel, nlLabel, deLabel, th.nl, nl, de},
	} {
		id, plan, ack := th.planIn(alice, r.channel, "cass-orders")
		text := plan.AllText()
		if !strings.Contains(text, r.inst.ID) || strings.Contains(text, r.notInst.ID) || !strings.Contains(text, r.label) || strings.Contains(text, r.other) {
			t.Errorf("plan in %s: want %s and target %s only:\n%s", r.channel, r.inst.ID, r.label, text)
		}
		th.clickIn(alice, r.channel, "patch_confirm", id, ack.ResponseURL)
		parent := th.parentIn(r.channel, id)
		if !strings.Contains(parent.AllText(), r.label) {
			t.Errorf("channel message does not name the target %s: %s", r.label, parent.AllText())
		}
		thread := th.threadIn(r.channel, parent.TS, "Batch results")
		if !strings.Contains(thread, r.label) {
			t.Errorf("batch results do not name the target %s:\n%s", r.label, thread)
		}
		jobs := r.fake.JobsFor(r.inst.ID)
		if len(jobs) != 1 {
			t.Fatalf("fake of %s started %d jobs for %s, want 1", r.label, len(jobs), r.inst.ID)
		}
		r.fake.CompleteJob(jobs[0], "3.11.3.9")
		summary := th.threadIn(r.channel, parent.TS, jobs[0]+"` Completed", "finished", "3.11.3.2 → 3.11.3.9")
		if strings.Count(summary, r.label) < 3 {
			t.Errorf("thread names the target %d times, want it in the results, the job's end and the summary:\n%s", strings.Count(summary, r.label), summary)
		}
	}
	th.quiesce()
	for _, c := range []struct {
		fake *upgradetest.Server
		want string
	}{{th.gdb, de.ID}, {th.nl, nl.ID}} {
		if calls := c.fake.BatchCalls(); len(calls) != 1 || !slices.Equal(calls[0], []string{c.want}) {
			t.Errorf("batch calls = %v, want one with %s", calls, c.want)
		}
	}
	var targets []string
	for _, ev := range th.auditEvents("submitted") {
		targets = append(targets, fmt.Sprint(ev["target"]))
	}
	slices.Sort(targets)
	if !slices.Equal(targets, []string{deTarget, nlTarget}) {
		t.Errorf("submitted audit events name targets %v, want %s and %s", targets, deTarget, nlTarget)
	}
	_, metrics := th.httpGet("/metrics")
	for _, name := range []string{deTarget, nlTarget} {
		if _, ok := metricLine(metrics, "geminidb_patch_batch_calls_total", `target="`+name+`"`, `result="ok"`); !ok {
			t.Errorf("/metrics has no batch calls of target %s:\n%s", name, metrics)
		}
		if _, ok := metricLine(metrics, "geminidb_patch_api_latency_seconds_count", `target="`+name+`"`, `call="job"`); !ok {
			t.Errorf("/metrics has no job reads of target %s", name)
		}
	}
}

// --target overrides the channel's target; where no target is the default
// the bot asks (listing them) and calls no GeminiDB; list and status use
// the chosen target.
func TestTargetsFlagAndAsking(t *testing.T) {
	t.Parallel()
	th := newTargetsHarness(t, "", "", nil)
	de, nl := th.twin("cass-users")
	deCalls, nlCalls := th.gdb.Calls(""), th.nl.Calls("")

	for _, text := range []string{"cass-users", "list"} {
		ack := th.slash(alice, opsChannel, text)
		reply := th.reply(ack.ResponseURL, "Which GeminiDB target").AllText()
		for _, want := range []string{"--target NAME", deTarget, nlTarget, "staging", deLabel, nlLabel} {
			if !strings.Contains(reply, want) {
				t.Errorf("%q without a target: the question lacks %q:\n%s", text, want, reply)
			}
		}
	}
	ack := th.slash(alice, deChannel, "cass-users --target nope")
	th.reply(ack.ResponseURL, "There is no target `nope`")
	th.quiesce()
	if th.gdb.Calls("") != deCalls || th.nl.Calls("") != nlCalls {
		t.Errorf("GeminiDB was called without a target: %d and %d calls, want %d and %d", th.gdb.Calls(""), th.nl.Calls(""), deCalls, nlCalls)
	}

	// In the eu-de channel, --target (any case) sends it to eu-nl.
	id, plan, ack := th.planIn(alice, deChannel, "cass-users --target PROD-EU-NL")
	if !strings.Contains(plan.AllText(), nl.ID) || strings.Contains(plan.AllText(), de.ID) || !strings.Contains(plan.AllText(), nlLabel) {
		t.Errorf("plan with --target %s: want %s on %s:\n%s", nlTarget, nl.ID, nlLabel, plan.AllText())
	}
	th.clickIn(alice, deChannel, "patch_confirm", id, ack.ResponseURL)
	th.threadIn(deChannel, th.parentIn(deChannel, id).TS, "Batch results", nlLabel)
	if n, m := len(th.gdb.BatchCalls()), len(th.nl.BatchCalls()); n != 0 || m != 1 {
		t.Errorf("batch calls: %d on eu-de, %d on eu-nl; want 0 and 1", n, m)
	}
	job := th.nl.JobsFor(nl.ID)[0]

	ack = th.slash(alice, opsChannel, "list --target prod-eu-de")
	if got := th.reply(ack.ResponseURL, "with a patch available").AllText(); !strings.Contains(got, de.ID) || strings.Contains(got, nl.ID) || !strings.Contains(got, deLabel) {
		t.Errorf("list --target %s: want %s only:\n%s", deTarget, de.ID, got)
	}
	// A job is shown only in the channel of the request that started it.
	ack = th.slash(alice, nlChannel, "status "+job)
	th.reply(ack.ResponseURL, "belongs to a request of another channel")
	ack = th.slash(alice, deChannel, "status "+job+" --target "+nlTarget)
	th.reply(ack.ResponseURL, "Job `"+job+"`")
	ack = th.slash(alice, deChannel, "status "+job)
	th.reply(ack.ResponseURL, "No request or job `"+job+"` is known here or in GeminiDB project "+th.gdb.ProjectID)
	ack = th.slash(alice, deChannel, "status "+id)
	th.reply(ack.ResponseURL, nlLabel)
}

// Each target's approvers decide its requests: prod-eu-de's own list
// replaces BOT_APPROVERS, prod-eu-nl uses BOT_APPROVERS, staging's empty
// list turns approval off.
func TestTargetsApprovers(t *testing.T) {
	t.Parallel()
	th := newTargetsHarness(t, "    approvers: ["+carol+"]", "", func(c *config.Config) { c.Approvers = []string{bob} })
	de, nl := th.twin("cass-billing")

	approve := func(channel, id, label, fakeName string, fake *upgradetest.Server, wrong, right string) {
		t.Helper()
		msg := th.messageIn(channel, "approval request for "+id, func(m slacktest.Message) bool {
			return buttonValue(m.Blocks, "patch_approve") == id
		})
		if !strings.Contains(msg.AllText(), "<@"+right+">") || strings.Contains(msg.AllText(), "<@"+wrong+">") || !strings.Contains(msg.AllText(), label) {
			t.Errorf("approval request in %s: want approver %s (not %s) and target %s:\n%s", channel, right, wrong, label, msg.AllText())
		}
		th.clickIn(wrong, channel, "patch_approve", id, "")
		th.ephemeralTo(wrong, "Only an approver (<@"+right+">)")
		th.quiesce()
		if n := len(fake.BatchCalls()); n != 0 {
			t.Fatalf("%s: %d batch calls after %s's refused approval, want 0", fakeName, n, wrong)
		}
		th.clickIn(right, channel, "patch_approve", id, "")
		th.threadIn(channel, th.parentIn(channel, id).TS, "Batch results", label)
	}

	id, plan, ack := th.planIn(alice, deChannel, "cass-billing")
	if !strings.Contains(plan.AllText(), "Request approval") {
		t.Errorf("eu-de plan should ask for approval:\n%s", plan.AllText())
	}
	th.clickIn(alice, deChannel, "patch_confirm", id, ack.ResponseURL)
	approve(deChannel, id, deLabel, "eu-de", th.gdb, bob, carol)

	id, _, ack = th.planIn(alice, nlChannel, "cass-billing")
	th.clickIn(alice, nlChannel, "patch_confirm", id, ack.ResponseURL)
	approve(nlChannel, id, nlLabel, "eu-nl", th.nl, carol, bob)

	if calls := th.gdb.BatchCalls(); len(calls) != 1 || calls[0][0] != de.ID {
		t.Errorf("eu-de batch calls = %v, want one with %s", calls, de.ID)
	}
	if calls := th.nl.BatchCalls(); len(calls) != 1 || calls[0][0] != nl.ID {
		t.Errorf("eu-nl batch calls = %v, want one with %s", calls, nl.ID)
	}
	if ev := th.auditEvents("approved"); len(ev) != 2 {
		t.Errorf("got %d approved audit events, want 2", len(ev))
	}

	// staging: approvers: [] → the requester's confirm patches.
	stage := upgradetest.NewInstance("cass-stage", "cassandra")
	th.gdb.AddInstance(stage)
	_, plan, _ = th.planIn(alice, stageChannel, "cass-stage")
	if strings.Contains(plan.AllText(), "Request approval") || !strings.Contains(plan.AllText(), "staging (eu-de)") {
		t.Errorf("staging plan should patch without approval, on staging (eu-de):\n%s", plan.AllText())
	}
	th.submitIn(stageChannel, "cass-stage")
}

// After a restart each request's jobs are followed with its own target's
// client; a request stored before targets existed (no target recorded)
// belongs to the first target.
func TestTargetsRestartFollowsEachRequestsTarget(t *testing.T) {
	t.Parallel()
	th := newTargetsHarness(t, "", "", nil)
	de, nl := th.twin("cass-ledger")
	deID, deTS := th.submitIn(deChannel, "cass-ledger")
	_, nlTS := th.submitIn(nlChannel, "cass-ledger")
	deJob, nlJob := th.gdb.JobsFor(de.ID)[0], th.nl.JobsFor(nl.ID)[0]

	th.stop()
	// As if written by a version without targets.
	st, err := store.Open(th.cfg.Store)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Update(t.Context(), deID, func(r *store.Request) error { r.Target = ""; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	th.gdb.CompleteJob(deJob, "3.11.3.9")
	th.nl.FailJob(nlJob, "Node 3 did not come back.")
	th.start()

	th.threadIn(deChannel, deTS, deJob+"` Completed", "finished", deLabel)
	th.threadIn(nlChannel, nlTS, "Node 3 did not come back.", "finished", nlLabel)
	th.quiesce()
	if strings.Contains(th.logs.String(), "read job failed") {
		t.Errorf("a job was read with the wrong target's client:\n%s", th.logs.String())
	}
}

// One target answering 500s (slowly) does not hold up the other: its jobs'
// ends are reported at once and its new requests are patched.
func TestTargetsOutageLeavesOthersWorking(t *testing.T) {
	t.Parallel()
	th := newTargetsHarness(t, "", "", nil)
	de, nl := th.twin("cass-events")
	_, deTS := th.submitIn(deChannel, "cass-events")
	_, nlTS := th.submitIn(nlChannel, "cass-events")
	deJob, nlJob := th.gdb.JobsFor(de.ID)[0], th.nl.JobsFor(nl.ID)[0]

	// eu-de breaks down: every call answers 500, after 5 s.
	th.gdb.FailNext("", 500, "APIG.0203", "Backend unavailable", 1<<30)
	th.gdb.SetDelay("", 5*time.Second)
	th.waitCalls(th.gdb, "/jobs", th.gdb.Calls("/jobs")+1) // a read of eu-de's job is under way

	start := time.Now()
	th.nl.CompleteJob(nlJob, "3.11.3.9")
	th.threadIn(nlChannel, nlTS, nlJob+"` Completed", "finished")
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("eu-nl's job end was reported after %s, want it not to wait for eu-de's 5 s answers", d)
	}
	// A new request on eu-nl is planned and patched meanwhile.
	other := upgradetest.NewInstance("cass-events-2", "cassandra")
	th.nl.AddInstance(other)
	th.submitIn(nlChannel, other.Name)
	if n := len(th.nl.BatchCalls()); n != 2 {
		t.Errorf("eu-nl batch calls = %d, want 2", n)
	}
	if text := th.threadIn(deChannel, deTS, "Batch results"); strings.Contains(text, deJob+"` Completed") {
		t.Errorf("eu-de's job was reported although its API is down:\n%s", text)
	}
	th.gdb.SetDelay("", 0)
}

// waitCalls waits until fake received n calls whose path ends with suffix.
func (h *harness) waitCalls(fake *upgradetest.Server, suffix string, n int) {
	h.t.Helper()
	if err := h.slack.WaitFor(h.ctx(), fmt.Sprintf("%d calls to %s", n, suffix), func(*slacktest.Server) bool {
		return fake.Calls(suffix) >= n
	}); err != nil {
		h.t.Fatal(err)
	}
}

// A target whose credentials are refused answers with the cloud's error in
// its own channel; the other target plans and patches as usual.
func TestTargetsRefusedCredentialsStayInTheirTarget(t *testing.T) {
	t.Parallel()
	th := newTargetsHarness(t, "", "", func(c *config.Config) {
		c.LookupEnv = config.MapLookup(map[string]string{"EU_DE_TOKEN": "MIIwrong-eu-de-token-0000", "EU_NL_PASSWORD": nlPassword})
	})
	th.twin("cass-audit")
	ack := th.slash(alice, deChannel, "cass-audit")
	th.reply(ack.ResponseURL, "APIG.0301")
	th.submitIn(nlChannel, "cass-audit")
	if n := len(th.nl.BatchCalls()); n != 1 {
		t.Errorf("eu-nl batch calls = %d, want 1", n)
	}
}

// doctor checks every target on its own.
func TestDoctorChecksEveryTarget(t *testing.T) {
	sl, gdb, cfg := fakeConfig(t)
	nl := upgradetest.NewServer(t, upgradetest.WithIAMUser("OTC-EU-NL", "patch-bot", nlPassword), upgradetest.WithProjectID(nlProject))
	file := filepath.Join(t.TempDir(), "targets.yaml")
	yaml := fmt.Sprintf("targets:\n"+
		"  - {name: %s, region: eu-de, endpoint: %s, project_id: %s, auth: {token_env: EU_DE_TOKEN}}\n"+
		"  - {name: %s, region: eu-nl, endpoint: %s, project_id: %s, auth: {iam: {endpoint: %s, username: patch-bot, password_env: EU_NL_PASSWORD, domain: OTC-EU-NL}}}\n",
		deTarget, gdb.URL, gdb.ProjectID, nlTarget, nl.URL, nlProject, nl.IAMURL)
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.LookupEnv = config.MapLookup(map[string]string{"EU_DE_TOKEN": "MIIwrong-eu-de-token-0000", "EU_NL_PASSWORD": nlPassword})
	cfg.GeminiDBEndpoint, cfg.GeminiDBProjectID, cfg.GeminiDBAuthToken = "", "", ""
	cfg.TargetsFile = file
	var stdout, stderr strings.Builder
	if code := run(t.Context(), []string{"doctor"}, withConfig(cfg), &stdout, &stderr); code != exitFailed {
		t.Errorf("got exit status %d, want %d", code, exitFailed)
	}
	out := stdout.String()
	for _, want := range []string{
		"PASS  configuration",
		"FAIL  geminidb " + deTarget, "APIG.0301",
		"PASS  geminidb " + nlTarget, "project " + nlProject + " in eu-nl",
		deLabel + " (token)", nlLabel + " (iam)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor's output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out+stderr.String(), nlPassword) || strings.Contains(out+stderr.String(), "MIIwrong-eu-de-token-0000") {
		t.Errorf("doctor printed a secret:\n%s", out)
	}
	if v := sl.Violations(); len(v) > 0 {
		t.Errorf("Slack protocol violations: %q", v)
	}
}
