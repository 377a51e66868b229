package bot

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/slack-go/slack"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/slacktest"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/patch"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

// golden compares blocks with testdata/name.json semantically (as decoded
// JSON), rewriting the file with -update.
func golden(t *testing.T, name string, blocks []slack.Block) {
	t.Helper()
	got, err := json.MarshalIndent(blocks, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", name+".json")
	if *update {
		if err := os.WriteFile(path, append(got, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run go test ./bot -update to create it): %v", err)
	}
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatalf("golden file %s is not JSON: %v", path, err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("blocks differ from %s (run with -update if the change is intended)\ngot:\n%s", path, got)
	}
}

func inst(id, name, engine string) upgrade.Instance {
	return upgrade.Instance{ID: id, Name: name, Engine: engine, Status: "normal", Version: "3.11", PatchAvailable: true, MaintenanceWindow: "02:00-06:00"}
}

// planTime is when the test plans were checked: 02:48 UTC, inside the
// window 02:00-06:00 and 5h12m before the window 08:00-12:00.
var planTime = time.Date(2026, 11, 28, 2, 48, 0, 0, time.UTC)

func seedPlan() upgrade.Plan {
	a := inst("046287aae57843b1a7bc61b7a8812f41in13", "cass-prod-1", "cassandra")
	a.WholeVersion = "3.11.3.2"
	b := inst("3d1e04f49efa473a8c7eaf07ed7ff870in13", "cass-prod-2", "cassandra")
	b.Version = "3.11 <beta> & co" // no whole version: the version is shown
	b.MaintenanceWindow = "08:00-12:00"
	return upgrade.Plan{
		Refs:      []string{"cass-prod-1", "cass-prod-2", "ghost"},
		Targets:   []upgrade.PlanItem{{Ref: "cass-prod-1", Instance: a}, {Ref: "cass-prod-2", Instance: b, Warning: "outside its maintenance window 08:00-12:00 UTC"}},
		Skipped:   []upgrade.Skip{{Ref: "ghost", Reason: "not found in project"}},
		Batches:   []upgrade.Batch{{Engine: "cassandra", InstanceIDs: []string{a.ID, b.ID}}},
		Force:     true,
		CheckedAt: planTime,
	}
}

func bigPlan(n int) upgrade.Plan {
	var p upgrade.Plan
	for i := range n {
		engine := "cassandra"
		if i%2 == 1 {
			engine = "influxdb"
		}
		in := inst(fmt.Sprintf("%032xin13", i), fmt.Sprintf("instance-with-a-rather-long-name-%03d", i), engine)
		p.Targets = append(p.Targets, upgrade.PlanItem{Ref: in.Name, Instance: in})
		p.Skipped = append(p.Skipped, upgrade.Skip{Ref: fmt.Sprintf("missing-%03d", i), Reason: "not found in project"})
	}
	return p
}

// outsidePlan skips two instances outside their maintenance windows.
func outsidePlan() upgrade.Plan {
	y := inst("9b0e7f1c2d3a4b5c6d7e8f9a0b1c2d3ein06", "influx-iot-prod", "influxdb")
	y.MaintenanceWindow = "08:00-12:00"
	z := inst("8a1f6e0d1c2b3a4f5e6d7c8b9a0f1e2din06", "cass-payments-prod", "cassandra")
	z.MaintenanceWindow = "22:00-02:00" // crosses midnight, closed at 02:48, opens in 19h12m
	return upgrade.Plan{
		Skipped: []upgrade.Skip{
			{Ref: "y", Instance: &y, OutsideWindow: true, Reason: "outside its maintenance window 08:00-12:00 UTC (now 02:48 UTC); add --force to patch anyway"},
			{Ref: "cass-payments-prod", Instance: &z, OutsideWindow: true, Reason: "outside its maintenance window 22:00-02:00 UTC (now 02:48 UTC); add --force to patch anyway"},
		},
		CheckedAt: planTime,
	}
}

var expires = time.Date(2026, 11, 28, 10, 15, 0, 0, time.UTC)

func TestPlanBlocksGolden(t *testing.T) {
	tests := []struct {
		name string
		plan upgrade.Plan
		view PlanView
	}{
		{"plan_seed", seedPlan(), PlanView{RequestID: "r-000000000001", ExpiresAt: expires}},
		{"plan_approval", seedPlan(), PlanView{RequestID: "r-000000000002", Approval: true, ExpiresAt: expires}},
		{"plan_dry_run", seedPlan(), PlanView{RequestID: "r-000000000003", DryRun: true}},
		{"plan_nothing", upgrade.Plan{Skipped: []upgrade.Skip{{Ref: "x", Reason: "no patch available (version 1.8)"}}}, PlanView{RequestID: "r-000000000004"}},
		{"plan_outside_window", outsidePlan(), PlanView{RequestID: "r-000000000005"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			golden(t, tt.name, kit{}.planBlocks(tt.plan, tt.view))
		})
	}
}

func TestSummaryBlocksGolden(t *testing.T) {
	p := seedPlan()
	r := store.Request{ID: "r-000000000001", Requester: "UALICE", Channel: "COPS"}
	results := []upgrade.UpgradeResult{
		{InstanceID: p.Targets[0].Instance.ID, JobID: "e4616470-733d-41de-a9b0-a260709293d3"},
		{InstanceID: p.Targets[1].Instance.ID, ErrorCode: "DBS.200011", ErrorMessage: "The status of DB instance does not allow the operation."},
	}
	jobs := []store.Job{{ID: "e4616470-733d-41de-a9b0-a260709293d3", InstanceID: p.Targets[0].Instance.ID, InstanceName: "cass-prod-1", Status: upgrade.JobCompleted, Reported: true, VersionBefore: "3.11.3.2"}}
	counts := countJobs(results, jobs)
	golden(t, "parent_running", kit{}.parentBlocks(ParentView{Request: r, Plan: p}))
	golden(t, "parent_finished", kit{}.parentBlocks(ParentView{Request: r, Plan: p, Counts: &counts, Finished: true}))
	msgs := messages("*Batch results*", kit{}.resultLines(p, results))
	if len(msgs) != 1 {
		t.Fatalf("got %d result messages, want 1", len(msgs))
	}
	golden(t, "thread_results", msgs[0])
	after := map[string]upgrade.Instance{p.Targets[0].Instance.ID: {ID: p.Targets[0].Instance.ID, Version: "3.11", WholeVersion: "3.11.3.5"}}
	golden(t, "thread_summary", messages("*Versions before → after*", kit{}.summaryLines(r, jobs, after))[0])
}

// threePlan patches two Cassandra instances and one Influx instance; two
// are forced outside their maintenance windows.
func threePlan() upgrade.Plan {
	p := seedPlan()
	c := inst("5f2e8d1a0b9c4e7f8a6b5c4d3e2f1a0bin13", "influx-metrics-eu-1", "influxdb")
	c.Version, c.WholeVersion, c.MaintenanceWindow = "1.8", "1.8.4.1", "09:00-13:00"
	p.Targets = append(p.Targets, upgrade.PlanItem{Ref: c.Name, Instance: c, Warning: "outside its maintenance window 09:00-13:00 UTC"})
	p.Batches = append(p.Batches, upgrade.Batch{Engine: "influxdb", InstanceIDs: []string{c.ID}})
	return p
}

func TestApprovalBlocksGolden(t *testing.T) {
	r := store.Request{ID: "r-000000000006", Requester: "UALICE", Channel: "COPS", ExpiresAt: expires}
	golden(t, "approval", kit{}.approvalBlocks(r, threePlan(), []string{"UBEN", "S0DBALEADS"}))
}

// endedAt is when the test jobs ended or were given up.
var endedAt = time.Date(2026, 11, 28, 9, 30, 0, 0, time.UTC)

// endedJobs are jobs of every kind of end: two completed, one failed, one
// the bot stopped following while it ran.
func endedJobs() []store.Job {
	start := endedAt.Add(-20 * time.Minute)
	return []store.Job{
		{ID: "e4616470-733d-41de-a9b0-a260709293d3", InstanceID: "046287aae57843b1a7bc61b7a8812f41in13", InstanceName: "cass-prod-1", Status: upgrade.JobCompleted,
			Started: start, Ended: start.Add(14 * time.Second), VersionBefore: "3.11.3.2", SubmittedAt: start},
		{ID: "0b7f3c2e-5a1d-4e6f-9a8b-7c6d5e4f3a2b", InstanceID: "3d1e04f49efa473a8c7eaf07ed7ff870in13", InstanceName: "cass-prod-2", Status: upgrade.JobFailed,
			Started: start, Ended: start.Add(21 * time.Second), VersionBefore: "3.11.3.2", SubmittedAt: start,
			FailReason: "Rolling restart timed out: node cass-prod-2_node_2 did not rejoin the cluster within 900 s; the instance was rolled back to 3.11.3.2."},
		{ID: "9c8b7a6f-5e4d-4c3b-8a2f-1e0d9c8b7a6f", InstanceID: "5f2e8d1a0b9c4e7f8a6b5c4d3e2f1a0bin13", InstanceName: "influx-metrics-eu-1", Status: upgrade.JobRunning, Progress: "40%",
			GaveUp: true, VersionBefore: "1.8.4.1", SubmittedAt: endedAt.Add(-6 * time.Hour)},
		{ID: "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d", InstanceID: "7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2bin13", InstanceName: "influx-metrics-eu-2", Status: upgrade.JobCompleted,
			Started: start, Ended: start.Add(16 * time.Second), VersionBefore: "1.8.4.1", SubmittedAt: start},
	}
}

func TestThreadBlocksGolden(t *testing.T) {
	jobs := endedJobs()
	for _, tt := range []struct {
		name string
		job  store.Job
	}{
		{"thread_job_completed", jobs[0]},
		{"thread_job_failed", jobs[1]},
		{"thread_job_unfollowed", jobs[2]},
	} {
		t.Run(tt.name, func(t *testing.T) {
			golden(t, tt.name, noticeBlocks(kit{}.jobLine(tt.job, endedAt)))
		})
	}
	ends := kit{}.jobEndsBlocks(jobs, endedAt)
	if len(ends) != 1 {
		t.Fatalf("got %d replies for 4 jobs, want 1", len(ends))
	}
	golden(t, "thread_job_ends", ends[0])

	// The final summary, as the follower puts it together.
	p := threePlan()
	p.Targets = append(p.Targets, upgrade.PlanItem{Ref: "influx-metrics-eu-2", Instance: upgrade.Instance{ID: jobs[3].InstanceID, Name: "influx-metrics-eu-2", Engine: "influxdb"}})
	ghost := upgrade.Instance{ID: "2b3c4d5e6f7a4b8c9d0e1f2a3b4c5d6ein06", Name: "cass-ledger-prod", Engine: "cassandra"}
	p.Targets = append(p.Targets, upgrade.PlanItem{Ref: ghost.Name, Instance: ghost})
	results := []upgrade.UpgradeResult{{InstanceID: ghost.ID, ErrorCode: "DBS.200011", ErrorMessage: "The status of DB instance does not allow the operation."}}
	for _, j := range jobs {
		results = append(results, upgrade.UpgradeResult{InstanceID: j.InstanceID, JobID: j.ID})
	}
	after := map[string]upgrade.Instance{
		jobs[0].InstanceID: {WholeVersion: "3.11.3.5"}, jobs[1].InstanceID: {WholeVersion: "3.11.3.2"},
		jobs[2].InstanceID: {WholeVersion: "1.8.4.1"}, jobs[3].InstanceID: {Version: "1.8", WholeVersion: "1.8.4.3"},
	}
	r := store.Request{ID: "r-000000000001", Requester: "UALICE", Channel: "COPS"}
	counts := countJobs(results, jobs)
	title := fmt.Sprintf("<@%s> request `%s` finished: %s.\n*Versions before → after*", r.Requester, r.ID, counts)
	lines := append(kit{}.summaryLines(r, jobs, after), kit{}.unstartedLines(p, results, after)...)
	golden(t, "thread_summary_mixed", messages(title, lines)[0])

	golden(t, "notice_expired", noticeBlocks(expiredNote(store.Request{ID: "r-000000000007", ExpiresAt: expires})))
}

// TestMessagesStayWithinSlackLimits renders 100 instances (and 100 skipped)
// and checks every message against Slack's limits.
func TestMessagesStayWithinSlackLimits(t *testing.T) {
	p := bigPlan(100)
	check := func(name string, blocks []slack.Block) {
		t.Helper()
		if len(blocks) > 50 {
			t.Errorf("%s: %d blocks, Slack allows 50", name, len(blocks))
		}
		raw, _ := json.Marshal(blocks)
		var decoded []map[string]any
		_ = json.Unmarshal(raw, &decoded)
		for i, b := range decoded {
			if txt, ok := b["text"].(map[string]any); ok {
				if s, _ := txt["text"].(string); len([]rune(s)) > 3000 {
					t.Errorf("%s: block %d text has %d characters, Slack allows 3000", name, i, len([]rune(s)))
				}
			}
		}
	}
	check("plan", kit{}.planBlocks(p, PlanView{RequestID: "r-1", ExpiresAt: expires}))
	check("approval", kit{}.approvalBlocks(store.Request{ID: "r-1", Requester: "U1"}, p, []string{"U2"}))
	var results []upgrade.UpgradeResult
	for i, tg := range p.Targets {
		if i%3 == 0 {
			results = append(results, upgrade.UpgradeResult{InstanceID: tg.Instance.ID, ErrorCode: "DBS.200011", ErrorMessage: strings.Repeat("The status of DB instance does not allow the operation. ", 3)})
		} else {
			results = append(results, upgrade.UpgradeResult{InstanceID: tg.Instance.ID, JobID: fmt.Sprintf("job-%036d", i)})
		}
	}
	msgs := messages("*Batch results*", kit{}.resultLines(p, results))
	total := 0
	for i, m := range msgs {
		check(fmt.Sprintf("results message %d", i), m)
		raw, _ := json.Marshal(m)
		total += strings.Count(string(raw), "`job-") + strings.Count(string(raw), "DBS.200011")
	}
	if total != 100 {
		t.Errorf("thread result messages mention %d instances, want all 100 (nothing cut off)", total)
	}
	plan := kit{}.planBlocks(p, PlanView{RequestID: "r-1"})
	raw, _ := json.Marshal(plan)
	if !strings.Contains(string(raw), "confirm") {
		t.Error("100-instance plan lost its confirm button")
	}
}

func TestEscapeStopsMentions(t *testing.T) {
	p := seedPlan()
	p.Skipped = []upgrade.Skip{{Ref: "x", Reason: "<!channel> boom & <@U1>"}}
	raw, _ := json.Marshal(kit{}.planBlocks(p, PlanView{RequestID: "r-1"}))
	if strings.Contains(string(raw), "<!channel>") || strings.Contains(string(raw), `\u003c!channel\u003e`) {
		t.Errorf("unescaped <!channel> from API text reached the message: %s", raw)
	}
}

func TestTruncateKeepsCharactersWhole(t *testing.T) {
	tests := []struct {
		name string
		in   string
		max  int
		want string
	}{
		{"short", "abc", 10, "abc"},
		{"exact", "abcdef", 6, "abcdef"},
		{"ascii", "abcdefghij", 6, "abc…"},
		{"multibyte", "ééééé", 8, "éé…"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := truncate(tt.in, tt.max)
			if got != tt.want || len(got) > tt.max || !utf8.ValidString(got) {
				t.Errorf("truncate(%q, %d) = %q, want %q (valid UTF-8, at most %d bytes)", tt.in, tt.max, got, tt.want, tt.max)
			}
		})
	}
}

func TestListSectionsCountsWhatIsLeftOut(t *testing.T) {
	lines := make([]string, 300)
	for i := range lines {
		lines[i] = fmt.Sprintf("• line %03d %s", i, strings.Repeat("x", 90))
	}
	blocks := listSections("*Title*", lines, 6000, " (see the thread)")
	if n := textLen(blocks); n > 6000 || len(blocks) < 2 {
		t.Fatalf("got %d sections of %d characters, want more than one within 6000", len(blocks), n)
	}
	raw, _ := json.Marshal(blocks)
	shown := strings.Count(string(raw), "• line ")
	want := fmt.Sprintf("… and %d more (see the thread)", 300-shown)
	if !strings.Contains(string(raw), want) {
		t.Errorf("last section does not say %q:\n%s", want, raw)
	}
}

// A drift note listing many instances stays within Slack's limits.
func TestLongNoteStaysWithinLimits(t *testing.T) {
	var note strings.Builder
	note.WriteString("Plan `r-1` was not submitted because instances changed since it was shown:")
	for i := range 100 {
		fmt.Fprintf(&note, "\n• instance-with-a-long-name-%03d `%032xin06`: version changed from 3.11.3.2 to 3.11.3.5 since the plan", i, i)
	}
	blocks := kit{}.planBlocks(bigPlan(3), PlanView{RequestID: "r-2", Note: note.String()})
	raw, _ := json.Marshal(blocks)
	if err := slacktest.ValidateBlocks(raw); err != nil {
		t.Errorf("plan with a long note breaks Slack's limits: %v", err)
	}
	if !strings.Contains(string(raw), "more") {
		t.Error("a note too long for its sections should say how many lines were left out")
	}
}

func TestCommandBlocksGolden(t *testing.T) {
	jobs := endedJobs()
	p := threePlan()
	results := []upgrade.UpgradeResult{
		{InstanceID: jobs[0].InstanceID, JobID: jobs[0].ID},
		{InstanceID: jobs[1].InstanceID, JobID: jobs[1].ID},
		{InstanceID: jobs[2].InstanceID, JobID: jobs[2].ID},
		{InstanceID: "2b3c4d5e6f7a4b8c9d0e1f2a3b4c5d6ein06", ErrorCode: patch.CodeUnknown, ErrorMessage: "GeminiDB did not answer the batch call in time: the patch may have started. Check the console before retrying."},
	}
	r := store.Request{ID: "r-000000000001", Requester: "UALICE", Channel: "COPS", State: store.Submitted}
	golden(t, "status_request", kit{}.requestStatusBlocks(r, p, results, jobs[:3]))
	job := upgrade.Job{ID: jobs[1].ID, Name: "UpgradeDbVersion", Status: upgrade.JobFailed, InstanceID: jobs[1].InstanceID, InstanceName: jobs[1].InstanceName,
		Started: jobs[1].Started, Ended: jobs[1].Ended, FailReason: jobs[1].FailReason}
	golden(t, "status_job", kit{}.jobStatusBlocks(job))
	var insts []upgrade.Instance
	for _, tg := range threePlan().Targets {
		insts = append(insts, tg.Instance)
	}
	golden(t, "list", kit{}.listBlocks([]string{"cassandra", "influxdb"}, insts, planTime))
}

// historyEntries are requests in every state history and the App Home show.
func historyEntries() []requestEntry {
	p := threePlan()
	created := time.Date(2026, 11, 27, 14, 5, 0, 0, time.UTC)
	req := func(id string, state store.State, user string, ago time.Duration) store.Request {
		return store.Request{ID: id, State: state, Requester: user, Channel: "COPS", CreatedAt: created.Add(-ago), UpdatedAt: created.Add(-ago + time.Hour),
			ExpiresAt: created.Add(-ago + 15*time.Minute), ParentTS: "1700000000.000100"}
	}
	one := upgrade.Plan{Targets: p.Targets[:1]}
	link := "https://fake.slack.com/archives/COPS/p1700000000000100"
	running := Counts{Running: 2, Completed: 1}
	done := Counts{Completed: 3}
	failed := Counts{Completed: 1, Failed: 1, NotSubmitted: 1}
	planned := req("r-000000000009", store.Planned, "UALICE", 0)
	planned.ParentTS = ""
	waiting := req("r-000000000008", store.AwaitingApproval, "UBEN", time.Hour)
	waiting.ParentTS, waiting.ApprovalTS = "", "1700000000.000200"
	return []requestEntry{
		{Request: planned, Plan: p},
		{Request: waiting, Plan: one, Link: "https://fake.slack.com/archives/COPS/p1700000000000200"},
		{Request: req("r-000000000007", store.Submitted, "UALICE", 2*time.Hour), Plan: p, Counts: &running, Link: link},
		{Request: req("r-000000000006", store.Done, "UBEN", 26*time.Hour), Plan: p, Counts: &done, Link: link},
		{Request: req("r-000000000005", store.Done, "UALICE", 50*time.Hour), Plan: p, Counts: &failed, Link: link},
		{Request: req("r-000000000004", store.Rejected, "UALICE", 74*time.Hour), Plan: one},
		{Request: req("r-000000000003", store.Expired, "UALICE", 98*time.Hour), Plan: one},
	}
}

func TestHistoryAndHomeGolden(t *testing.T) {
	all := historyEntries()
	golden(t, "history", kit{}.historyBlocks(all, "", ""))
	golden(t, "history_none", kit{}.historyBlocks(nil, "UCAROL", ""))
	now := time.Date(2026, 11, 27, 14, 7, 0, 0, time.UTC)
	home := kit{}.homeView(homeData{User: "UALICE", Allowed: true, Open: all[:1], Running: all[2:3], Finished: all[3:6]}, now)
	golden(t, "home", home.Blocks.BlockSet)
	golden(t, "home_empty", kit{}.homeView(homeData{User: "UALICE", Allowed: true}, now).Blocks.BlockSet)
	golden(t, "home_refused", kit{}.homeView(homeData{User: "USAM"}, now).Blocks.BlockSet)
}

// Every < in the golden messages opens one of Slack's controls the bot
// means (a mention, a channel, a date, a link); anything else would be
// text Slack swallows or a control it obeys.
func TestGoldenMarkupIsWellFormed(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	control := regexp.MustCompile(`<([^<>]*)>`)
	allowed := regexp.MustCompile(`^(@[UW][A-Z0-9]+|#C[A-Z0-9]+|!subteam\^S[A-Z0-9]+|!date\^\d+\^[^|]+\|[^|]+|https://[^|\s]+\|[^|]+)$`)
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		text := slacktest.BlocksText(raw)
		for _, m := range control.FindAllStringSubmatch(text, -1) {
			if !allowed.MatchString(m[1]) {
				t.Errorf("%s: unexpected control <%s>", f, m[1])
			}
		}
		if strings.Count(text, "<") != strings.Count(text, ">") {
			t.Errorf("%s: unbalanced < and >:\n%s", f, text)
		}
	}
}
