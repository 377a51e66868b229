package bot

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/slack-go/slack"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/slacktest"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/patch"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// text is every text of blocks, one piece per line.
func text(t *testing.T, blocks []slack.Block) string {
	t.Helper()
	raw, err := json.Marshal(blocks)
	if err != nil {
		t.Fatal(err)
	}
	return slacktest.BlocksText(raw)
}

// buttonStyles maps each button's action_id to its style.
func buttonStyles(t *testing.T, blocks []slack.Block) map[string]string {
	t.Helper()
	raw, _ := json.Marshal(blocks)
	var bs []struct {
		Elements []struct {
			ActionID string `json:"action_id"`
			Style    string `json:"style"`
		} `json:"elements"`
	}
	if err := json.Unmarshal(raw, &bs); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, b := range bs {
		for _, e := range b.Elements {
			if e.ActionID != "" {
				out[e.ActionID] = e.Style
			}
		}
	}
	return out
}

// Two forced instances: "2 instances are outside their maintenance
// windows", never "2 instance iss".
func TestForcedCountIsPlural(t *testing.T) {
	p := threePlan()
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"approval", text(t, kit{}.approvalBlocks(store.Request{ID: "r-1", Requester: "U1"}, p, []string{"U2"})), "2 instances are outside their maintenance windows (--force)."},
		{"plan", text(t, kit{}.planBlocks(p, PlanView{RequestID: "r-1"})), "2 instances will be patched outside their maintenance windows (--force)."},
		{"plan of one", text(t, kit{}.planBlocks(seedPlan(), PlanView{RequestID: "r-1"})), "1 instance will be patched outside its maintenance window (--force)."},
		{"skipped", text(t, kit{}.planBlocks(outsidePlan(), PlanView{RequestID: "r-1"})), "2 instances are outside their maintenance windows and left out; run the command again with --force to include them."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(tt.got, tt.want) {
				t.Errorf("got\n%s\nwant it to contain %q", tt.got, tt.want)
			}
			if strings.Contains(tt.got, "iss ") || strings.Contains(tt.got, "instance are") || strings.Contains(tt.got, "instances is") {
				t.Errorf("got a broken plural:\n%s", tt.got)
			}
		})
	}
}

// Engines are named as the products: "2 Cassandra, 1 Influx", not
// "cassandra 2", which reads like a version.
func TestEngineCountsNameProducts(t *testing.T) {
	p := threePlan()
	if got, want := engineCounts(p.Targets), "2 Cassandra, 1 Influx"; got != want {
		t.Errorf("engineCounts = %q, want %q", got, want)
	}
	for name, blocks := range map[string][]slack.Block{
		"plan":     kit{}.planBlocks(p, PlanView{RequestID: "r-1"}),
		"approval": kit{}.approvalBlocks(store.Request{ID: "r-1", Requester: "U1"}, p, []string{"U2"}),
		"parent":   kit{}.parentBlocks(ParentView{Request: store.Request{ID: "r-1", Requester: "U1"}, Plan: p}),
	} {
		if got := text(t, blocks); !strings.Contains(got, "(2 Cassandra, 1 Influx)") || strings.Contains(got, "cassandra 2") {
			t.Errorf("%s: got\n%s\nwant (2 Cassandra, 1 Influx)", name, got)
		}
	}
	if got := engineName("mongodb"); got != "MongoDB" {
		t.Errorf("engineName(mongodb) = %q", got)
	}
	if got := engineName("newdb"); got != "newdb" {
		t.Errorf("an unknown engine keeps its name: got %q", got)
	}
}

// The plan shows the whole version, as the summary does; without one, the
// version.
func TestPlanShowsWholeVersion(t *testing.T) {
	got := text(t, kit{}.planBlocks(threePlan(), PlanView{RequestID: "r-1"}))
	for _, want := range []string{"Cassandra 3.11.3.2,", "Influx 1.8.4.1,", "Cassandra 3.11 &lt;beta&gt; &amp; co,"} {
		if !strings.Contains(got, want) {
			t.Errorf("plan lacks %q:\n%s", want, got)
		}
	}
}

// The window is shown once per row, with whether it is open at the plan's
// time or how soon it opens.
func TestWindowShownOnceWithItsState(t *testing.T) {
	p := seedPlan()
	rows := map[string]string{}
	for _, t := range p.Targets {
		rows[t.Instance.Name] = kit{}.targetLine(t, p.CheckedAt)
	}
	if got := rows["cass-prod-1"]; !strings.HasSuffix(got, "window 02:00-06:00 UTC, open now") {
		t.Errorf("open window: got %q", got)
	}
	got := rows["cass-prod-2"]
	if !strings.Contains(got, "window 08:00-12:00 UTC, opens in 5h12m") || strings.Count(got, "08:00-12:00") != 1 {
		t.Errorf("closed, forced window: got %q, want it once, with opens in 5h12m", got)
	}

	at := func(h, m, s int) time.Time { return time.Date(2026, 11, 28, h, m, s, 0, time.UTC) }
	tests := []struct {
		window string
		at     time.Time
		want   string
	}{
		{"02:00-06:00", at(2, 0, 0), "window 02:00-06:00 UTC, open now"},
		{"02:00-06:00", at(6, 0, 0), "window 02:00-06:00 UTC, opens in 20h"},
		{"02:00-06:00", at(1, 59, 30), "window 02:00-06:00 UTC, opens in 1m"},
		{"02:00-06:00", at(1, 0, 1), "window 02:00-06:00 UTC, opens in 1h"},
		{"22:00-02:00", at(23, 0, 0), "window 22:00-02:00 UTC, open now"},
		{"22:00-02:00", at(3, 15, 0), "window 22:00-02:00 UTC, opens in 18h45m"},
		{"08:00-12:00", at(2, 48, 0), "window 08:00-12:00 UTC, opens in 5h12m"},
		{"08:00-12:00", time.Time{}, "window 08:00-12:00 UTC"},
		{"", at(2, 0, 0), "no maintenance window"},
		{"whenever", at(2, 0, 0), "window whenever UTC"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s at %s", tt.window, tt.at.Format("15:04:05")), func(t *testing.T) {
			if got, _ := windowText(tt.window, tt.at); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// Times use Slack's date formatting, so every reader sees their own time,
// with a UTC fallback.
func TestTimesUseSlackDateFormatting(t *testing.T) {
	want := "<!date^1795860900^{date_short_pretty} {time}|2026-11-28 10:15 UTC>"
	if got := slackDate(expires.In(time.FixedZone("CET", 3600))); got != want {
		t.Errorf("slackDate = %q, want %q", got, want)
	}
	for name, got := range map[string]string{
		"plan":     text(t, kit{}.planBlocks(seedPlan(), PlanView{RequestID: "r-1", ExpiresAt: expires})),
		"approval": text(t, kit{}.approvalBlocks(store.Request{ID: "r-1", Requester: "U1", ExpiresAt: expires}, seedPlan(), []string{"U2"})),
		"expired":  expiredNote(store.Request{ID: "r-1", ExpiresAt: expires}),
	} {
		if !strings.Contains(got, want) {
			t.Errorf("%s: got\n%s\nwant it to contain %s", name, got, want)
		}
	}
}

// A job the bot stopped following is not a failure: it may still be
// running, and both its reply and the summary say so with a mark of its own.
func TestUnfollowedJobIsNotAFailure(t *testing.T) {
	j := endedJobs()[2]
	lines := map[string]string{
		"reply":   kit{}.jobLine(j, endedAt),
		"summary": kit{}.summaryLines(store.Request{}, []store.Job{j}, nil)[0],
		"grouped": text(t, kit{}.jobEndsBlocks([]store.Job{j}, endedAt)[0]),
	}
	for name, got := range lines {
		if strings.Contains(got, ":x:") || strings.Contains(got, "Failed") {
			t.Errorf("%s: got %q, marked as failed", name, got)
		}
		if !strings.Contains(got, ":hourglass_flowing_sand:") || !strings.Contains(got, "may still be running") {
			t.Errorf("%s: got %q, want the ⏳ mark and that it may still be running", name, got)
		}
	}
}

// Danger is the style of the buttons that start patching, and only theirs.
func TestDangerMeansPatching(t *testing.T) {
	tests := []struct {
		name   string
		blocks []slack.Block
		want   map[string]string
	}{
		{"confirm without approvers", kit{}.planBlocks(seedPlan(), PlanView{RequestID: "r-1"}),
			map[string]string{ActionConfirm: "danger", ActionCancel: ""}},
		{"request approval", kit{}.planBlocks(seedPlan(), PlanView{RequestID: "r-1", Approval: true}),
			map[string]string{ActionConfirm: "primary", ActionCancel: ""}},
		{"approver", kit{}.approvalBlocks(store.Request{ID: "r-1", Requester: "U1"}, seedPlan(), []string{"U2"}),
			map[string]string{ActionApprove: "danger", ActionReject: ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := buttonStyles(t, tt.blocks)
			for id, style := range tt.want {
				if got[id] != style {
					t.Errorf("button %s: got style %q, want %q", id, got[id], style)
				}
			}
		})
	}
}

// Documented error codes come with a hint after the code and message,
// which stay verbatim; other codes get none.
func TestErrorCodesCarryAHint(t *testing.T) {
	p := seedPlan()
	id := p.Targets[1].Instance.ID
	msg := "The status of DB instance does not allow the operation."
	tests := []struct {
		code, want string
	}{
		{"DBS.200011", "wait until the operation on it ends"},
		{"DBS.280443", "try again in a minute"},
		{"APIG.0301", "must renew it"},
		{"APIGW.0301", "must renew it"},
		{"DBS.999999", ""},
		{patch.CodeNotSent, ""},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			res := []upgrade.UpgradeResult{{InstanceID: id, ErrorCode: tt.code, ErrorMessage: msg}}
			for name, line := range map[string]string{
				"thread":  kit{}.resultLines(p, res)[0],
				"summary": kit{}.unstartedLines(p, res, nil)[0],
			} {
				if !strings.Contains(line, "`"+tt.code+"` "+msg) {
					t.Errorf("%s: got %q, want the code and message verbatim", name, line)
				}
				if tt.want == "" && strings.Contains(line, ":bulb:") {
					t.Errorf("%s: got %q, want no hint for %s", name, line, tt.code)
				}
				if tt.want != "" && (!strings.Contains(line, ":bulb:") || !strings.Contains(line, tt.want)) {
					t.Errorf("%s: got %q, want a hint containing %q", name, line, tt.want)
				}
			}
		})
	}
	// Every code geminidb-api.md documents has a hint.
	for _, code := range []string{"DBS.200011", "DBS.201000", "DBS.200018", "DBS.200019", "DBS.201015", "DBS.200002", "DBS.201028",
		"DBS.280110", "DBS.280404", "DBS.200604", "DBS.200001", "DBS.280001", "DBS.201006", "DBS.280015", "DBS.280056", "DBS.280032",
		"DBS.280063", "DBS.280443", "DBS.200998", "DBS.280005", "APIG.0301", "APIG.0307", "APIG.0308", "APIG.0101"} {
		if errorHint(code) == "" {
			t.Errorf("no hint for %s", code)
		}
	}
}

// With a console configured, every instance name links to its console page.
func TestConsoleLinks(t *testing.T) {
	k := kit{console: "https://console.example.com/nosql/?region={region}&project={project_id}#/instance/{instance_id}", region: "eu-de", project: "0123abcd"}
	p := seedPlan()
	id := p.Targets[0].Instance.ID
	link := "<https://console.example.com/nosql/?region=eu-de&amp;project=0123abcd#/instance/" + id + "|cass-prod-1>"
	jobs := endedJobs()
	results := []upgrade.UpgradeResult{{InstanceID: id, JobID: jobs[0].ID}}
	for name, got := range map[string]string{
		"plan":     text(t, k.planBlocks(p, PlanView{RequestID: "r-1"})),
		"approval": text(t, k.approvalBlocks(store.Request{ID: "r-1", Requester: "U1"}, p, []string{"U2"})),
		"results":  strings.Join(k.resultLines(p, results), "\n"),
		"reply":    k.jobLine(jobs[0], endedAt),
		"grouped":  text(t, k.jobEndsBlocks(jobs[:1], endedAt)[0]),
		"summary":  strings.Join(k.summaryLines(store.Request{}, jobs[:1], nil), "\n"),
	} {
		if !strings.Contains(got, link) {
			t.Errorf("%s: got\n%s\nwant the name linked: %s", name, got, link)
		}
	}
	if got := (kit{}).name("cass-prod-1", id); got != "*cass-prod-1*" {
		t.Errorf("without a console: got %q, want the plain name", got)
	}
	// Without a region the placeholder stays, as documented.
	if got := (kit{console: "https://c.example/{region}/{instance_id}"}).consoleURL("abc"); got != "https://c.example/{region}/abc" {
		t.Errorf("without a region: got %q", got)
	}
	// An unnamed instance links its ID.
	if got := k.who("", "abc"); !strings.Contains(got, "|abc>") {
		t.Errorf("unnamed: got %q", got)
	}
	raw, _ := json.Marshal(k.planBlocks(bigPlan(100), PlanView{RequestID: "r-1", ExpiresAt: expires}))
	if err := slacktest.ValidateBlocks(raw); err != nil {
		t.Errorf("a 100-instance plan with console links breaks Slack's limits: %v", err)
	}
}

// Jobs ending together make one reply: failures first with their reasons,
// completions as one compact list; many jobs split into several replies,
// each within Slack's limits, none left out.
func TestJobEndsGrouped(t *testing.T) {
	if got := (kit{}).jobEndsBlocks(nil, endedAt); got != nil {
		t.Errorf("no jobs: got %d replies, want none", len(got))
	}
	got := text(t, kit{}.jobEndsBlocks(endedJobs(), endedAt)[0])
	failed, unfollowed, completed := strings.Index(got, ":x:"), strings.Index(got, ":hourglass_flowing_sand:"), strings.Index(got, "*Completed* (2)")
	if !(failed >= 0 && failed < unfollowed && unfollowed < completed) {
		t.Errorf("want failures, then unfollowed, then completions:\n%s", got)
	}
	if !strings.Contains(got, "did not rejoin the cluster") {
		t.Errorf("the failure's reason is missing:\n%s", got)
	}

	var jobs []store.Job
	for i := range 300 {
		j := store.Job{ID: fmt.Sprintf("job-%03d", i), InstanceID: fmt.Sprintf("%032xin06", i), InstanceName: fmt.Sprintf("instance-with-a-rather-long-name-%03d", i),
			Status: upgrade.JobCompleted, Started: endedAt.Add(-time.Minute), Ended: endedAt}
		if i%5 == 0 {
			j.Status, j.FailReason = upgrade.JobFailed, strings.Repeat("The node did not come back. ", 8)
		}
		jobs = append(jobs, j)
	}
	k := kit{console: "https://console.example.com/nosql/#/instance/{instance_id}"}
	replies := k.jobEndsBlocks(jobs, endedAt)
	seen := map[string]bool{}
	for i, blocks := range replies {
		raw, _ := json.Marshal(blocks)
		if err := slacktest.ValidateBlocks(raw); err != nil {
			t.Errorf("reply %d breaks Slack's limits: %v", i, err)
		}
		txt := slacktest.BlocksText(raw)
		for _, j := range jobs {
			if strings.Contains(txt, "|"+j.InstanceName+">") {
				seen[j.InstanceName] = true
			}
		}
	}
	if len(seen) != len(jobs) {
		t.Errorf("the replies name %d of %d instances", len(seen), len(jobs))
	}
	if len(replies) < 2 {
		t.Errorf("300 jobs fit in %d replies; want them split", len(replies))
	}
}
