package upgrade_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade/upgradetest"
)

// A batch call answered with an HTTP error is classified by its status and
// code: GeminiDB's 4xx refusals started nothing; any 5xx and the gateway's
// codes other than its pre-forwarding refusals may have started the patch.
func TestClassifyAnswers(t *testing.T) {
	tests := []struct {
		status    int
		code, msg string
		want      upgrade.Outcome
	}{
		{500, "DBS.200998", "System busy. Try again later.", upgrade.OutcomeUnknown},
		{500, "DBS.280005", "Server error.", upgrade.OutcomeUnknown},
		{502, "APIG.0202", "Backend unavailable.", upgrade.OutcomeUnknown},
		{503, "", "", upgrade.OutcomeUnknown},
		{504, "APIG.0201", "Backend timeout.", upgrade.OutcomeUnknown},
		// The gateway uses APIG.0201 for request errors at 4xx too; as the
		// code alone cannot tell them from a backend's failure, unknown.
		{400, "APIG.0201", "API request error.", upgrade.OutcomeUnknown},
		{413, "APIG.0201", "Request entity too large.", upgrade.OutcomeUnknown},
		{400, "APIG.1009", "Something new.", upgrade.OutcomeUnknown},
		{400, "", "bad request", upgrade.OutcomeUnknown}, // no cloud code: who refused?
		{403, "DBS.200011", "The status of DB instance does not allow the operation.", upgrade.OutcomeRefused},
		{400, "DBS.280001", "Invalid parameter.", upgrade.OutcomeRefused},
		{404, "DBS.200002", "The DB instance does not exist.", upgrade.OutcomeRefused},
		{429, "DBS.280443", "Too many requests.", upgrade.OutcomeRefused},
		{401, "APIG.0301", "Incorrect IAM authentication information: verify token failed", upgrade.OutcomeRefused},
		{401, "APIGW.0307", "The token must be updated.", upgrade.OutcomeRefused},
		{429, "APIG.0308", "The throttling threshold has been reached.", upgrade.OutcomeRefused},
		{404, "APIG.0101", "The API does not exist or has not been published in the environment.", upgrade.OutcomeRefused},
		{403, "APIG.0401", "Unknown client IP address.", upgrade.OutcomeUnknown}, // not documented as harmless
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d %s", tt.status, tt.code), func(t *testing.T) {
			t.Parallel()
			s := upgradetest.NewServer(t, upgradetest.WithToken(testToken))
			in := upgradetest.NewInstance("c", "cassandra")
			s.AddInstance(in)
			c := newTokenClient(t, s, upgrade.WithAuthBackoff(time.Nanosecond))
			s.FailNext("/instances/db-upgrade", tt.status, tt.code, tt.msg, 1)
			_, err := c.BatchUpgrade(context.Background(), []string{in.ID})
			f := upgrade.Classify(err)
			if f.Outcome != tt.want {
				t.Errorf("got %s, want %s (err %v)", f.Outcome, tt.want, err)
			}
			wantCode := tt.code
			if wantCode == "" {
				wantCode = fmt.Sprintf("HTTP %d", tt.status)
			}
			if f.Status != tt.status || f.Code != wantCode || f.Message == "" || (tt.msg != "" && f.Message != tt.msg) {
				t.Errorf("got status %d code %q message %q, want %d %q %q", f.Status, f.Code, f.Message, tt.status, wantCode, tt.msg)
			}
		})
	}
}

// A gateway that gives up on a backend that went on working: the answer is
// 504 APIG.0201, yet the job runs. Classify must not call that a refusal.
func TestClassifyGatewayTimeoutAfterTheJobStarted(t *testing.T) {
	s := upgradetest.NewServer(t, upgradetest.WithToken(testToken))
	in := upgradetest.NewInstance("c", "cassandra")
	s.AddInstance(in)
	c := newTokenClient(t, s)
	s.FailNextAfter("/instances/db-upgrade", http.StatusGatewayTimeout, "APIG.0201", "Backend timeout.", 1)
	_, err := c.BatchUpgrade(context.Background(), []string{in.ID})
	if f := upgrade.Classify(err); f.Outcome != upgrade.OutcomeUnknown || f.Code != "APIG.0201" || f.Message != "Backend timeout." {
		t.Errorf("got %+v, want unknown APIG.0201 Backend timeout.", f)
	}
	if jobs := s.JobsFor(in.ID); len(jobs) != 1 {
		t.Errorf("got jobs %v, want the one the backend started", jobs)
	}
}

// Failures without a whole answer after the request was written are unknown;
// failures before anything was sent are not sent.
func TestClassifyWithoutAnswer(t *testing.T) {
	t.Run("reset after the job started", func(t *testing.T) {
		s := upgradetest.NewServer(t, upgradetest.WithToken(testToken))
		in := upgradetest.NewInstance("c", "cassandra")
		s.AddInstance(in)
		s.BreakNext("/instances/db-upgrade", upgradetest.BreakReset, 1)
		_, err := newTokenClient(t, s).BatchUpgrade(context.Background(), []string{in.ID})
		if f := upgrade.Classify(err); f.Outcome != upgrade.OutcomeUnknown || f.Status != 0 || f.Message == "" {
			t.Errorf("got %+v (err %v), want unknown without status", f, err)
		}
		if len(s.JobsFor(in.ID)) != 1 {
			t.Error("the fake started no job")
		}
	})
	t.Run("truncated body", func(t *testing.T) {
		s := upgradetest.NewServer(t, upgradetest.WithToken(testToken))
		in := upgradetest.NewInstance("c", "cassandra")
		s.AddInstance(in)
		s.BreakNext("/instances/db-upgrade", upgradetest.BreakTruncate, 1)
		_, err := newTokenClient(t, s).BatchUpgrade(context.Background(), []string{in.ID})
		if f := upgrade.Classify(err); err == nil || f.Outcome != upgrade.OutcomeUnknown {
			t.Errorf("got %+v (err %v), want unknown", f, err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		s := upgradetest.NewServer(t, upgradetest.WithToken(testToken))
		in := upgradetest.NewInstance("c", "cassandra")
		s.AddInstance(in)
		s.SetDelay("/instances/db-upgrade", time.Second)
		_, err := newTokenClient(t, s, upgrade.WithCallTimeout(20*time.Millisecond)).BatchUpgrade(context.Background(), []string{in.ID})
		if f := upgrade.Classify(err); f.Outcome != upgrade.OutcomeUnknown || !strings.Contains(f.Message, "in time") {
			t.Errorf("got %+v (err %v), want unknown, no answer in time", f, err)
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		c, err := upgrade.NewClient(closedURL(t), "p", upgrade.TokenAuth(testToken), fastRetry)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.BatchUpgrade(context.Background(), []string{someID})
		if f := upgrade.Classify(err); f.Outcome != upgrade.OutcomeNotSent || f.Message == "" {
			t.Errorf("got %+v (err %v), want not sent", f, err)
		}
	})
	t.Run("refused by validation", func(t *testing.T) {
		c, err := upgrade.NewClient(closedURL(t), "p", upgrade.TokenAuth(testToken))
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.BatchUpgrade(context.Background(), nil)
		if f := upgrade.Classify(err); f.Outcome != upgrade.OutcomeNotSent {
			t.Errorf("got %+v, want not sent", f)
		}
	})
}

// Errors built by hand, as other packages' tests build them.
func TestClassifyErrorValues(t *testing.T) {
	backoff := &upgrade.AuthBackoffError{Err: &upgrade.APIError{Status: 401, Code: "APIG.0301"}}
	tests := []struct {
		name string
		err  error
		want upgrade.Outcome
		code string
	}{
		{"credentials refused a moment ago", fmt.Errorf("batch: %w", &upgrade.NotSentError{Err: backoff}), upgrade.OutcomeNotSent, "APIG.0301"},
		{"IAM login refused", &upgrade.NotSentError{Err: &upgrade.APIError{Status: 401, Code: "IAM.0001"}}, upgrade.OutcomeNotSent, ""},
		{"redirect", fmt.Errorf("batch: %w", &upgrade.RedirectError{Status: 307, Host: "evil.example"}), upgrade.OutcomeUnknown, "HTTP 307"},
		{"deadline", fmt.Errorf("batch: %w", context.DeadlineExceeded), upgrade.OutcomeUnknown, ""},
		{"cancelled mid-call", fmt.Errorf("batch: %w", context.Canceled), upgrade.OutcomeUnknown, ""},
		{"reset", errors.New("read tcp: connection reset by peer"), upgrade.OutcomeUnknown, ""},
		{"wrapped 502", fmt.Errorf("batch: %w", &upgrade.APIError{Status: 502}), upgrade.OutcomeUnknown, "HTTP 502"},
		{"nil", nil, upgrade.OutcomeUnknown, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := upgrade.Classify(tt.err)
			if f.Outcome != tt.want || f.Code != tt.code {
				t.Errorf("got %s %q, want %s %q", f.Outcome, f.Code, tt.want, tt.code)
			}
			if tt.err != nil && f.Message == "" {
				t.Error("got no message")
			}
		})
	}
	if got := upgrade.Classify(&upgrade.APIError{Status: 504, Code: "APIG.0201", Message: "Backend timeout."}).String(); got != "unknown: HTTP 504 APIG.0201: Backend timeout." {
		t.Errorf("String: got %q", got)
	}
	if f := upgrade.Classify(&upgrade.NotSentError{Err: backoff}); f.Backoff != backoff {
		t.Errorf("got Backoff %v, want the *AuthBackoffError", f.Backoff)
	}
	if got := []string{upgrade.OutcomeUnknown.String(), upgrade.OutcomeRefused.String(), upgrade.OutcomeNotSent.String()}; !reflect.DeepEqual(got, []string{"unknown", "refused", "not_sent"}) {
		t.Errorf("got names %v", got)
	}
}

func TestReconcile(t *testing.T) {
	const x, y, z = "x", "y", "z"
	job := func(id, j string) upgrade.UpgradeResult { return upgrade.UpgradeResult{InstanceID: id, JobID: j} }
	refused := func(id string) upgrade.UpgradeResult {
		return upgrade.UpgradeResult{InstanceID: id, ErrorCode: "DBS.200011", ErrorMessage: "The status of DB instance does not allow the operation."}
	}
	tests := []struct {
		name string
		sent []string
		rows []upgrade.UpgradeResult
		want upgrade.BatchAnswer
	}{
		{"one row each, answer order differs", []string{x, y}, []upgrade.UpgradeResult{refused(y), job(x, "j1")},
			upgrade.BatchAnswer{Results: []upgrade.UpgradeResult{job(x, "j1"), refused(y)}}},
		{"job then refusal", []string{x}, []upgrade.UpgradeResult{job(x, "j1"), refused(x)},
			upgrade.BatchAnswer{Results: []upgrade.UpgradeResult{job(x, "j1")}}},
		{"refusal then job", []string{x}, []upgrade.UpgradeResult{refused(x), job(x, "j1")},
			upgrade.BatchAnswer{Results: []upgrade.UpgradeResult{job(x, "j1")}}},
		{"a row with a job and a code", []string{x}, []upgrade.UpgradeResult{{InstanceID: x, JobID: "j1", ErrorCode: "DBS.1"}},
			upgrade.BatchAnswer{Results: []upgrade.UpgradeResult{job(x, "j1")}}},
		{"two jobs", []string{x, y}, []upgrade.UpgradeResult{job(x, "j1"), job(y, "j3"), job(x, "j2"), job(x, "j1")},
			upgrade.BatchAnswer{Results: []upgrade.UpgradeResult{job(x, "j1"), job(y, "j3")}, ExtraJobs: []upgrade.UpgradeResult{job(x, "j2")}}},
		{"two refusals", []string{x}, []upgrade.UpgradeResult{refused(x), {InstanceID: x, ErrorCode: "DBS.2"}},
			upgrade.BatchAnswer{Results: []upgrade.UpgradeResult{refused(x)}}},
		{"missing", []string{x, y}, []upgrade.UpgradeResult{job(y, "j1")},
			upgrade.BatchAnswer{Results: []upgrade.UpgradeResult{{InstanceID: x}, job(y, "j1")}, Missing: []string{x}}},
		{"not sent", []string{x}, []upgrade.UpgradeResult{job(x, "j1"), job(z, "j9"), {ErrorCode: "DBS.3"}},
			upgrade.BatchAnswer{Results: []upgrade.UpgradeResult{job(x, "j1")}, Unexpected: []upgrade.UpgradeResult{job(z, "j9"), {ErrorCode: "DBS.3"}}}},
		{"a row without job or code", []string{x, y}, []upgrade.UpgradeResult{{InstanceID: x, ErrorMessage: "?"}, job(y, "j1")},
			upgrade.BatchAnswer{Results: []upgrade.UpgradeResult{{InstanceID: x}, job(y, "j1")}, Missing: []string{x}}},
		{"empty answer", []string{x}, nil,
			upgrade.BatchAnswer{Results: []upgrade.UpgradeResult{{InstanceID: x}}, Missing: []string{x}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := upgrade.Reconcile(tt.sent, tt.rows)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
	a := upgrade.Reconcile([]string{x, y}, []upgrade.UpgradeResult{job(x, "j1"), job(x, "j2"), job(y, "j3")})
	if got := a.JobIDs(); !reflect.DeepEqual(got, []string{"j1", "j3", "j2"}) {
		t.Errorf("JobIDs: got %v, want [j1 j3 j2]", got)
	}
}

// The answers of issue 19 from the fake, over the wire: a duplicated row
// keeps its job, a second job is followed, a row for an instance not sent
// is reported.
func TestReconcileFakeAnswers(t *testing.T) {
	s := upgradetest.NewServer(t, upgradetest.WithToken(testToken))
	a, b, other := upgradetest.NewInstance("a", "cassandra"), upgradetest.NewInstance("b", "cassandra"), upgradetest.NewInstance("o", "cassandra")
	for _, in := range []upgrade.Instance{a, b, other} {
		s.AddInstance(in)
	}
	c := newTokenClient(t, s)
	var second, stray string
	s.RewriteNextBatch(func(rows []upgrade.UpgradeResult, startJob func(string) string) []upgrade.UpgradeResult {
		second, stray = startJob(b.ID), startJob(other.ID)
		return append(rows,
			upgrade.UpgradeResult{InstanceID: a.ID, ErrorCode: "DBS.200011", ErrorMessage: "The status of DB instance does not allow the operation."},
			upgrade.UpgradeResult{InstanceID: b.ID, JobID: second},
			upgrade.UpgradeResult{InstanceID: other.ID, JobID: stray})
	})
	rows, err := c.BatchUpgrade(context.Background(), []string{a.ID, b.ID})
	if err != nil {
		t.Fatal(err)
	}
	ans := upgrade.Reconcile([]string{a.ID, b.ID}, rows)
	jobsA, jobsB := s.JobsFor(a.ID), s.JobsFor(b.ID)
	if len(jobsA) != 1 || len(jobsB) != 2 {
		t.Fatalf("fake jobs: a %v, b %v", jobsA, jobsB)
	}
	want := upgrade.BatchAnswer{
		Results:    []upgrade.UpgradeResult{{InstanceID: a.ID, JobID: jobsA[0]}, {InstanceID: b.ID, JobID: jobsB[0]}},
		ExtraJobs:  []upgrade.UpgradeResult{{InstanceID: b.ID, JobID: second}},
		Unexpected: []upgrade.UpgradeResult{{InstanceID: other.ID, JobID: stray}},
	}
	if !reflect.DeepEqual(ans, want) {
		t.Errorf("got  %+v\nwant %+v", ans, want)
	}
	for _, id := range ans.JobIDs() {
		if _, err := c.Job(context.Background(), id); err != nil {
			t.Errorf("job %s cannot be followed: %v", id, err)
		}
	}
	// The rewrite is for one call only.
	s.CompleteJob(jobsA[0], "")
	s.SetInstance(a.ID, func(in *upgrade.Instance) { in.PatchAvailable = true })
	rows, err = c.BatchUpgrade(context.Background(), []string{a.ID})
	if err != nil || len(rows) != 1 || rows[0].JobID == "" {
		t.Errorf("next call: got %+v, %v, want one job", rows, err)
	}
}
