package upgradetest_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade/upgradetest"
)

func get(t *testing.T, s *upgradetest.Server, path string) (int, map[string]any) {
	t.Helper()
	return do(t, s, http.MethodGet, path, "")
}

func do(t *testing.T, s *upgradetest.Server, method, path, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, s.URL+"/v3/"+s.ProjectID+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Auth-Token", "t")
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("got non-JSON body %q: %v", b, err)
	}
	return resp.StatusCode, m
}

func TestListPagingAndFilters(t *testing.T) {
	s := upgradetest.NewServer(t, upgradetest.WithToken("t"))
	for i := range 7 {
		engine := "cassandra"
		if i >= 5 {
			engine = "influxdb"
		}
		s.AddInstance(upgradetest.NewInstance(fmt.Sprintf("db-%d", i), engine))
	}
	tests := []struct {
		query     string
		wantTotal int
		wantPage  int
	}{
		{"", 7, 7},
		{"?limit=3", 7, 3},
		{"?limit=3&offset=6", 7, 1},
		{"?offset=10", 7, 0},
		{"?datastore_type=influxdb", 2, 2},
		{"?name=db-3", 1, 1},
		{"?name=db", 0, 0},
		{"?name=*db-", 7, 7},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			status, m := get(t, s, "/instances"+tt.query)
			if status != 200 {
				t.Fatalf("got status %d, want 200", status)
			}
			if got := int(m["total_count"].(float64)); got != tt.wantTotal {
				t.Errorf("got total_count %d, want %d", got, tt.wantTotal)
			}
			if got := len(m["instances"].([]any)); got != tt.wantPage {
				t.Errorf("got %d instances, want %d", got, tt.wantPage)
			}
		})
	}
}

func TestWireShapes(t *testing.T) {
	s := upgradetest.NewServer(t, upgradetest.WithToken("t"))
	in := upgradetest.NewInstance("c", "cassandra")
	s.AddInstance(in)
	_, m := get(t, s, "/instances")
	raw := m["instances"].([]any)[0].(map[string]any)
	if _, ok := raw["pay_mode"].(float64); !ok {
		t.Errorf("got pay_mode %#v, want a number", raw["pay_mode"])
	}
	ds := raw["datastore"].(map[string]any)
	if ds["type"] != "cassandra" || ds["patch_available"] != true {
		t.Errorf("got datastore %v, want cassandra with a patch", ds)
	}
	nodes := raw["groups"].([]any)[0].(map[string]any)["nodes"].([]any)
	if len(nodes) != 3 {
		t.Errorf("got %d nodes, want 3", len(nodes))
	}

	status, m := do(t, s, http.MethodPost, "/instances/db-upgrade", `{"instance_ids":["`+in.ID+`"]}`)
	if status != http.StatusAccepted {
		t.Fatalf("got status %d, want 202", status)
	}
	jobID := m["upgrade_results"].([]any)[0].(map[string]any)["job_id"].(string)
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`).MatchString(jobID) {
		t.Errorf("got job_id %q, want a UUID", jobID)
	}
	_, m = get(t, s, "/jobs?id="+jobID)
	if m["total_count"].(float64) != 1 {
		t.Fatalf("got %v, want one job", m)
	}
	j := m["jobs"].([]any)[0].(map[string]any)
	if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0000$`).MatchString(j["start_time"].(string)) {
		t.Errorf("got start_time %q, want the +0000 layout", j["start_time"])
	}
	if j["status"] != "Running" || j["progress"] != "0%" || j["end_time"] != "" || j["name"] != "UpgradeDbVersion" {
		t.Errorf("got job %v, want Running 0%% without end", j)
	}
	if inst := j["instance"].(map[string]any); inst["id"] != in.ID || inst["name"] != "c" {
		t.Errorf("got instance %v, want %s c", inst, in.ID)
	}
	s.FailJob(jobID, "node unreachable")
	_, m = get(t, s, "/jobs?id="+jobID)
	j = m["jobs"].([]any)[0].(map[string]any)
	if j["status"] != "Failed" || j["fail_reason"] != "node unreachable" || j["end_time"] == "" {
		t.Errorf("got job %v, want Failed with reason and end", j)
	}
	if got, _ := s.Instance(in.ID); len(got.Actions) != 0 || got.Version != in.Version {
		t.Errorf("got %+v, want no action and the old version after a failure", got)
	}
}

func TestBatchLimits(t *testing.T) {
	s := upgradetest.NewServer(t, upgradetest.WithToken("t"))
	ids := make([]string, 11)
	for i := range ids {
		ids[i] = fmt.Sprintf("%q", fmt.Sprint("id", i))
	}
	for name, body := range map[string]string{
		"eleven":  `{"instance_ids":[` + strings.Join(ids, ",") + `]}`,
		"missing": `{}`,
		"garbage": `{`,
	} {
		t.Run(name, func(t *testing.T) {
			status, m := do(t, s, http.MethodPost, "/instances/db-upgrade", body)
			if status != 400 || m["error_code"] != "DBS.280001" {
				t.Errorf("got %d %v, want 400 DBS.280001", status, m)
			}
		})
	}
	if got := len(s.BatchCalls()); got != 0 {
		t.Errorf("got %d recorded batch calls, want 0", got)
	}
}
