package bot

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/slack-go/slack"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/commands"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/slacktest"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// worstKit links every instance to a long console URL (BOT_CONSOLE_URL).
var worstKit = kit{console: "https://console.eu-de.otc.t-systems.com/geminidb/?region={region}&project={project_id}#/instances/detail/{instance_id}/overview/with/a/long/path", region: "eu-de", project: "0123456789abcdef0123456789abcdef"}

// worstPlan is 100 instances with long names (and 100 skipped ones).
func worstPlan() upgrade.Plan { return worstPlanOf(100) }

// worstPlanOf is worstPlan with n instances.
func worstPlanOf(n int) upgrade.Plan {
	p := bigPlan(n)
	for i := range p.Targets {
		p.Targets[i].Instance.Name = fmt.Sprintf("%s-%s", strings.Repeat("very-long-instance-name-", 4), p.Targets[i].Instance.Name)
		if i%7 == 0 {
			p.Targets[i].Warning = "outside its maintenance window 02:00-06:00 UTC"
		}
	}
	p.CheckedAt = planTime
	return p
}

// longReason is a 4,000-character failure reason, with characters to escape.
var longReason = strings.Repeat("disk <full> & replica lagging; ", 130)[:4000]

func worstJobs(p upgrade.Plan) []store.Job {
	jobs := make([]store.Job, len(p.Targets))
	start := planTime.Add(time.Minute)
	for i, t := range p.Targets {
		jobs[i] = store.Job{ID: fmt.Sprintf("job-%032x", i), RequestID: "r-000000000001", InstanceID: t.Instance.ID, InstanceName: t.Instance.Name,
			Status: upgrade.JobCompleted, VersionBefore: "3.11.3.2", Started: start, Ended: start.Add(14 * time.Minute), SubmittedAt: start}
		if i%10 == 0 {
			jobs[i].Status, jobs[i].FailReason = upgrade.JobFailed, longReason
		}
		if i%10 == 5 {
			jobs[i].Status, jobs[i].GaveUp = upgrade.JobRunning, true
		}
	}
	return jobs
}

func worstResults(p upgrade.Plan) []upgrade.UpgradeResult {
	results := make([]upgrade.UpgradeResult, len(p.Targets))
	for i, t := range p.Targets {
		results[i] = upgrade.UpgradeResult{InstanceID: t.Instance.ID, JobID: fmt.Sprintf("job-%032x", i)}
		if i%4 == 1 {
			results[i] = upgrade.UpgradeResult{InstanceID: t.Instance.ID, ErrorCode: "DBS.200011", ErrorMessage: longReason}
		}
		if i%9 == 2 {
			results[i] = upgrade.UpgradeResult{InstanceID: t.Instance.ID, ErrorCode: "APIG.0201", ErrorMessage: longReason}
		}
	}
	return results
}

// withinBudget fails t when a message breaks the builder rule: at most 50
// blocks, 3,000 characters per text object (Slack's own check, as the fake
// runs it) and 10,000 characters of text in all.
func withinBudget(t *testing.T, kind string, blocks []slack.Block) {
	t.Helper()
	raw, err := json.Marshal(blocks)
	if err != nil {
		t.Fatal(err)
	}
	if err := slacktest.ValidateBlocks(raw); err != nil {
		t.Errorf("%s: Slack refuses it: %v", kind, err)
	}
	if len(blocks) > maxBlocks {
		t.Errorf("%s: %d blocks, the budget is %d", kind, len(blocks), maxBlocks)
	}
	if n := slacktest.BlocksTextLen(raw); n > maxMessageText {
		t.Errorf("%s: %d characters of text, the budget is %d", kind, n, maxMessageText)
	}
}

// TestEveryMessageKindFitsByConstruction builds every kind of message the
// bot sends for the worst case (100 instances, long names, 4,000-character
// failure reasons, console links) and checks each against the budget; long
// lists go on in more replies or say how many are left out.
func TestEveryMessageKindFitsByConstruction(t *testing.T) {
	// 100 instances (a patch of named instances) and 200 (a fleet selector,
	// BOT_MAX_INSTANCES): every message kind fits at both.
	for _, n := range []int{100, 200} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			p, k := worstPlanOf(n), worstKit
			r := store.Request{ID: "r-000000000001", Requester: "U1", Channel: "COPS", State: store.Submitted, ExpiresAt: expires, CreatedAt: planTime}
			results, jobs := worstResults(p), worstJobs(p)
			after := map[string]upgrade.Instance{}
			for _, t := range p.Targets {
				after[t.Instance.ID] = t.Instance
			}
			label := "prod (eu-de)"

			withinBudget(t, "plan", k.planBlocks(p, PlanView{RequestID: r.ID, ExpiresAt: expires, Note: longReason, Target: label}))
			approval := withTarget(k.approvalBlocks(r, p, []string{"U2", "S3"}), label)
			withinBudget(t, "approval request", approval)
			if !strings.Contains(text(t, approval), "more — `"+commands.Command+" status r-000000000001` lists all") {
				t.Errorf("the approval request does not say where to read every instance:\n%s", text(t, approval))
			}
			c := countJobs(results, jobs)
			withinBudget(t, "channel parent", k.parentBlocks(ParentView{Request: r, Plan: p, Counts: &c, Rollout: []string{"wave 1: 10 sent", "wave 2: waiting"}, CanStop: true, Target: label}))
			withinBudget(t, "channel parent, finished", k.parentBlocks(ParentView{Request: r, Plan: p, Counts: &c, Finished: true, Target: label}))

			// The thread's reports: every instance is in some part.
			reports := map[string][][]slack.Block{
				"batch results": messages(titled("*Batch results* (70 submitted, 30 not submitted)", label), k.resultLines(p, results)),
				"job ends":      k.jobEndsBlocks(jobs, planTime.Add(time.Hour)),
				"summary":       messages("<@U1> request `r-000000000001` finished.\n*Versions before → after*", append(k.summaryLines(r, jobs, after), k.unstartedLines(p, results, after)...)),
			}
			for kind, parts := range reports {
				seen := map[string]bool{}
				for i, part := range parts {
					part = withTarget(part, label)
					if kind == "summary" && i == len(parts)-1 {
						part = append(part, retryBlock(r.ID, 30))
					}
					withinBudget(t, fmt.Sprintf("%s part %d", kind, i+1), part)
					txt := text(t, part)
					for _, tg := range p.Targets {
						if strings.Contains(txt, tg.Instance.ID) {
							seen[tg.Instance.ID] = true
						}
					}
				}
				if len(seen) != len(p.Targets) {
					t.Errorf("%s names %d of %d instances over %d parts: a part was cut", kind, len(seen), len(p.Targets), len(parts))
				}
			}

			withinBudget(t, "paused", pausedBlocks(r.ID, longReason, "<@U1>"))
			withinBudget(t, "status of a request", withTarget(k.requestStatusBlocks(r, p, results, jobs), label))
			withinBudget(t, "status of a job", k.jobStatusBlocks(upgrade.Job{ID: "job-1", Name: "upgrade", InstanceID: p.Targets[0].Instance.ID, InstanceName: p.Targets[0].Instance.Name, Status: upgrade.JobFailed, FailReason: longReason, Started: planTime, Ended: planTime.Add(time.Hour)}))
			insts := make([]upgrade.Instance, len(p.Targets))
			for i, tg := range p.Targets {
				insts[i] = tg.Instance
			}
			withinBudget(t, "list", k.listBlocks([]string{"cassandra", "influxdb"}, insts, planTime))
			var entries []requestEntry
			for i := range 100 {
				rr := r
				rr.ID = fmt.Sprintf("r-%012d", i)
				rr.ParentTS = "1700000000.000100"
				entries = append(entries, requestEntry{Request: rr, Plan: p, Counts: &c, Link: "https://example.slack.com/archives/COPS/p1700000000000100?thread_ts=1700000000.000100&cid=COPS"})
			}
			withinBudget(t, "history", k.historyBlocks(entries, "", ""))
			home := k.homeView(homeData{User: "U1", Allowed: true, Open: entries, Running: entries, Finished: entries}, planTime)
			withinBudget(t, "App Home", home.Blocks.BlockSet)
			raw, _ := json.Marshal(home)
			if err := slacktest.ValidateView(raw); err != nil {
				t.Errorf("App Home: Slack refuses the view: %v", err)
			}
			for _, msg := range []string{longReason, strings.Repeat("<@U1> ", 2000)} {
				withinBudget(t, "notice", noticeBlocks(msg))
			}
		})
	}
}

// TestFitShortensWhatIsOver: fit, the check on the way out, brings a
// message over the budget within it and keeps its buttons.
func TestFitShortensWhatIsOver(t *testing.T) {
	var blocks []slack.Block
	for range 60 {
		blocks = append(blocks, section(strings.Repeat("x", 2500)))
	}
	blocks = append(blocks, rolloutButtons("r-1", true, true))
	got := fit(blocks, maxMessageText, " — `status r-1` lists all")
	withinBudget(t, "fitted", got)
	if _, ok := got[len(got)-1].(*slack.ActionBlock); !ok {
		t.Errorf("fit dropped the buttons: last block is %T", got[len(got)-1])
	}
	if !strings.Contains(text(t, got), "`status r-1` lists all") {
		t.Error("fit does not say the message was shortened")
	}
	small := []slack.Block{section("fine")}
	if got := fit(small, maxMessageText, ""); len(got) != 1 {
		t.Errorf("fit changed a message within budget: %d blocks", len(got))
	}
}
