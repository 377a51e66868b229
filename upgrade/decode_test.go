package upgrade_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade/upgradetest"
)

func jsonDecode(resp *http.Response, v any) error { return json.NewDecoder(resp.Body).Decode(v) }

// rawServer answers every request with status and body.
func rawServer(t *testing.T, status int, body string, header map[string]string) *upgrade.Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	c, err := upgrade.NewClient(srv.URL, "p", upgrade.TokenAuth(testToken), upgrade.WithRetry(upgrade.RetryPolicy{MaxAttempts: 1}))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDecodeInstancesLeniently(t *testing.T) {
	body := `{"instances":[{
		"id":"a1b2c3d4e5f60718293a4b5c6d7e8f90in06","name":"cass-prod","status":"normal","port":8635,"mode":"Cluster",
		"datastore":{"type":"Cassandra","version":"3.11","storage_engine":"rocksDB","patch_available":"true","whole_version":"3.11.3.2"},
		"pay_mode":0,"maintenance_window":"22:00-02:00","time_zone":8,"actions":["REBOOT"],
		"backup_strategy":{"start_time":"19:00-20:00","keep_days":"7"},
		"groups":[
			{"id":"g1","status":"normal","volume":{"size":100,"used":"0.003"},"nodes":[{"id":"n1","name":"node_1","status":"normal","support_reduce":"true"}]},
			{"id":"g2","status":"normal","nodes":[{"id":"n2","name":"node_2","status":"abnormal"}]}
		],
		"enterprise_project_id":0,"dedicated_resource_id":null
	}],"total_count":"1"}`
	c := rawServer(t, 200, body, nil)
	page, err := c.ListInstances(context.Background(), upgrade.ListOptions{})
	if err != nil {
		t.Fatalf("ListInstances: %v", err)
	}
	if page.TotalCount != 1 || len(page.Instances) != 1 {
		t.Fatalf("got total %d, %d instances, want 1, 1", page.TotalCount, len(page.Instances))
	}
	got := page.Instances[0]
	want := upgrade.Instance{
		ID: "a1b2c3d4e5f60718293a4b5c6d7e8f90in06", Name: "cass-prod", Status: "normal", Engine: "cassandra",
		Version: "3.11", WholeVersion: "3.11.3.2", PatchAvailable: true, MaintenanceWindow: "22:00-02:00",
		TimeZone: "8", Mode: "Cluster", Actions: []string{"REBOOT"},
		Nodes: []upgrade.Node{{ID: "n1", Name: "node_1", Status: "normal"}, {ID: "n2", Name: "node_2", Status: "abnormal"}},
	}
	gj, _ := json.Marshal(got)
	wj, _ := json.Marshal(want)
	if string(gj) != string(wj) {
		t.Errorf("got  %s\nwant %s", gj, wj)
	}
}

func TestFakeRendersWhatClientReads(t *testing.T) {
	s := upgradetest.NewServer(t)
	in := upgradetest.NewInstance("x", "influxdb")
	in.MaintenanceWindow = "02:00-06:00"
	in.Actions = []string{"RESIZE"}
	s.AddInstance(in)
	c, err := upgrade.NewClient(s.URL, s.ProjectID, upgrade.TokenAuth("any"))
	if err != nil {
		t.Fatal(err)
	}
	page, err := c.ListInstances(context.Background(), upgrade.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gj, _ := json.Marshal(page.Instances[0])
	wj, _ := json.Marshal(in)
	if string(gj) != string(wj) {
		t.Errorf("got  %s\nwant %s", gj, wj)
	}
}

func TestDecodeJobs(t *testing.T) {
	tests := []struct {
		name        string
		start, end  string
		wantStart   time.Time
		wantEnd     time.Time
		wantStatus  string
		wantInstant string
	}{
		{name: "+0000", start: "2023-09-12T06:44:01+0000", end: "2023-09-12T06:52:13+0000",
			wantStart: time.Date(2023, 9, 12, 6, 44, 1, 0, time.UTC), wantEnd: time.Date(2023, 9, 12, 6, 52, 13, 0, time.UTC)},
		{name: "+0800", start: "2023-09-12T14:44:01+0800", wantStart: time.Date(2023, 9, 12, 6, 44, 1, 0, time.UTC)},
		{name: "RFC3339", start: "2023-09-12T06:44:01Z", end: "2023-09-12T08:52:13+02:00",
			wantStart: time.Date(2023, 9, 12, 6, 44, 1, 0, time.UTC), wantEnd: time.Date(2023, 9, 12, 6, 52, 13, 0, time.UTC)},
		{name: "empty", start: "", end: ""},
		{name: "garbage is zero, not an error", start: "yesterday", end: "soon"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := `{"total_count":1,"jobs":[{"id":"e4616470-733d-41de-a9b0-a260709293d3","name":"UpgradeDbVersion","status":"Completed",
				"created":"2023-09-12T06:44:01+0000","start_time":"` + tt.start + `","end_time":"` + tt.end + `","progress":"",
				"instance":{"id":"046287aae57843b1a7bc61b7a8812f41in13","name":"cass-1"},"fail_reason":null}]}`
			c := rawServer(t, 200, body, nil)
			j, err := c.Job(context.Background(), "e4616470-733d-41de-a9b0-a260709293d3")
			if err != nil {
				t.Fatalf("Job: %v", err)
			}
			if !j.Started.Equal(tt.wantStart) || !j.Ended.Equal(tt.wantEnd) {
				t.Errorf("got start %v end %v, want %v %v", j.Started, j.Ended, tt.wantStart, tt.wantEnd)
			}
			if j.InstanceID != "046287aae57843b1a7bc61b7a8812f41in13" || j.InstanceName != "cass-1" || j.Status != "Completed" || j.Name != "UpgradeDbVersion" {
				t.Errorf("got %+v, want instance 046287…in13 cass-1, Completed", j)
			}
		})
	}
}

func TestJobNotFoundShapes(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
	}{
		{"empty list", 200, `{"total_count":0,"jobs":[]}`},
		{"other job only", 200, `{"total_count":1,"jobs":[{"id":"other"}]}`},
		{"404 from the service", 404, `{"error_code":"DBS.200025","error_msg":"The job does not exist."}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := rawServer(t, tt.status, tt.body, nil)
			_, err := c.Job(context.Background(), "j1")
			if !errors.Is(err, upgrade.ErrJobNotFound) {
				t.Errorf("got %v, want ErrJobNotFound", err)
			}
		})
	}
	c := rawServer(t, 404, `{"error_code":"APIG.0101","error_msg":"The API does not exist or has not been published in the environment."}`, nil)
	if _, err := c.Job(context.Background(), "j1"); errors.Is(err, upgrade.ErrJobNotFound) {
		t.Errorf("got ErrJobNotFound for a wrong endpoint, want a plain APIError")
	}
}

func TestAPIErrorShapes(t *testing.T) {
	long := strings.Repeat("x", 100<<10)
	tests := []struct {
		name        string
		status      int
		body        string
		header      map[string]string
		wantCode    string
		wantMessage string
		wantReqID   string
	}{
		{name: "geminidb", status: 400, body: `{"error_code":"DBS.200001","error_msg":"Invalid parameter."}`, wantCode: "DBS.200001", wantMessage: "Invalid parameter."},
		{name: "error_message", status: 403, body: `{"error_code":"DBS.200011","error_message":"The status of DB instance does not allow the operation."}`, wantCode: "DBS.200011", wantMessage: "The status of DB instance does not allow the operation."},
		{name: "apig", status: 401, body: `{"error_code":"APIG.0301","error_msg":"Incorrect IAM authentication information: verify aksk signature fail","request_id":"abc"}`, header: map[string]string{"X-Request-Id": "req-42"}, wantCode: "APIG.0301", wantMessage: "Incorrect IAM authentication information: verify aksk signature fail", wantReqID: "req-42"},
		{name: "keystone", status: 401, body: `{"error":{"code":401,"message":"The request you have made requires authentication.","title":"Unauthorized"}}`, wantMessage: "The request you have made requires authentication."},
		{name: "html", status: 502, body: "<html>\n<body>\n  <h1>502 Bad Gateway</h1>\n</body></html>", wantMessage: "<html> <body> <h1>502 Bad Gateway</h1> </body></html>"},
		{name: "empty", status: 503, body: "", wantMessage: "Service Unavailable"},
		{name: "huge", status: 500, body: long, wantMessage: strings.Repeat("x", 200) + "…"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := rawServer(t, tt.status, tt.body, tt.header)
			_, err := c.ListInstances(context.Background(), upgrade.ListOptions{})
			ae := apiError(t, err)
			if ae.Status != tt.status || ae.Code != tt.wantCode || ae.Message != tt.wantMessage || ae.RequestID != tt.wantReqID {
				t.Errorf("got %d %q %q %q, want %d %q %q %q", ae.Status, ae.Code, ae.Message, ae.RequestID, tt.status, tt.wantCode, tt.wantMessage, tt.wantReqID)
			}
			if ae.Method != "GET" || ae.Path != "/v3/p/instances" {
				t.Errorf("got %s %s, want GET /v3/p/instances", ae.Method, ae.Path)
			}
			if !strings.HasPrefix(err.Error(), "list instances: ") {
				t.Errorf("got %q, want it to start with the call", err)
			}
		})
	}
}

func TestBatchDecodesMixedResults(t *testing.T) {
	c := rawServer(t, 202, `{"upgrade_results":[{"instance_id":"a","job_id":"j"},{"instance_id":"b","error_code":"DBS.200011","error_message":"busy"},{"instance_id":"c","error_code":"DBS.200002","error_msg":"gone"}]}`, nil)
	got, err := c.BatchUpgrade(context.Background(), []string{"a", "b", "c"})
	if err != nil {
		t.Fatal(err)
	}
	want := []upgrade.UpgradeResult{{InstanceID: "a", JobID: "j"}, {InstanceID: "b", ErrorCode: "DBS.200011", ErrorMessage: "busy"}, {InstanceID: "c", ErrorCode: "DBS.200002", ErrorMessage: "gone"}}
	if len(got) != len(want) {
		t.Fatalf("got %d results, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("got %+v, want %+v", got[i], want[i])
		}
	}
}

// TestNoSecretsInErrors provokes every credential failure and checks no
// secret leaks into error text or into the authenticators' printed form.
func TestNoSecretsInErrors(t *testing.T) {
	s := upgradetest.NewServer(t, upgradetest.WithIAMUser(testDomain, testUser, testPassword+"-other"), upgradetest.WithAKSK(testAK, testSK+"-other"), upgradetest.WithToken("other"))
	iam := upgrade.NewIAMAuth(upgrade.IAMConfig{Endpoint: s.IAMURL, Username: testUser, Password: testPassword, Domain: testDomain, ProjectID: s.ProjectID})
	badIAM := upgrade.NewIAMAuth(upgrade.IAMConfig{Endpoint: "::bad", Username: testUser, Password: testPassword, Domain: testDomain, ProjectID: s.ProjectID})
	auths := map[string]upgrade.Authenticator{
		"token":   upgrade.TokenAuth(testToken),
		"iam":     iam,
		"bad iam": badIAM,
		"aksk":    upgrade.AKSKAuth(testAK, testSK),
		"no ak":   upgrade.AKSKAuth("", testSK),
	}
	for name, a := range auths {
		t.Run(name, func(t *testing.T) {
			c, err := upgrade.NewClient(s.URL, s.ProjectID, a, fastRetry)
			if err != nil {
				t.Fatal(err)
			}
			_, err1 := c.ListInstances(context.Background(), upgrade.ListOptions{})
			_, err2 := c.BatchUpgrade(context.Background(), []string{"x"})
			_, err3 := c.Job(context.Background(), "j")
			for _, err := range []error{err1, err2, err3} {
				if err == nil {
					t.Errorf("got nil error, want a credential failure")
				}
				assertNoSecret(t, err)
			}
			for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
				printed := fmt.Sprintf(f, a)
				for _, sec := range secrets {
					if strings.Contains(printed, sec) {
						t.Errorf("got %s, want no secret", printed)
					}
				}
			}
		})
	}
}
