package upgrade_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade/upgradetest"
)

// tagFleet is a fake with n instances; instance i has tag env=prod when
// i is even, else env=stage, and team=db when i is a multiple of 3.
func tagFleet(t *testing.T, n int) (*upgradetest.Server, []upgrade.Instance) {
	t.Helper()
	s := upgradetest.NewServer(t, upgradetest.WithToken(testToken))
	var fleet []upgrade.Instance
	for i := range n {
		in := upgradetest.NewInstance(fmt.Sprintf("db-%03d", i), "cassandra")
		s.AddInstance(in)
		tags := map[string]string{"env": "stage"}
		if i%2 == 0 {
			tags["env"] = "prod"
		}
		if i%3 == 0 {
			tags["team"] = "db"
		}
		s.SetTags(in.ID, tags)
		fleet = append(fleet, in)
	}
	return s, fleet
}

func idsWhere(fleet []upgrade.Instance, keep func(i int) bool) []string {
	var out []string
	for i, in := range fleet {
		if keep(i) {
			out = append(out, in.ID)
		}
	}
	sort.Strings(out)
	return out
}

func TestInstancesByTags(t *testing.T) {
	s, fleet := tagFleet(t, 230)
	c := newTokenClient(t, s)
	ctx := context.Background()

	got, err := c.InstancesByTags(ctx, []upgrade.TagFilter{{Key: "env", Values: []string{"prod"}}, {Key: "team", Values: []string{"db"}}})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, in := range got {
		ids = append(ids, in.ID)
	}
	sort.Strings(ids)
	if want := idsWhere(fleet, func(i int) bool { return i%6 == 0 }); !slices.Equal(ids, want) {
		t.Errorf("env=prod AND team=db: got %d instances, want %d", len(ids), len(want))
	}
	if got[0].Name != "db-000" || !slices.Equal(got[0].Tags, []upgrade.Tag{{Key: "env", Value: "prod"}, {Key: "team", Value: "db"}}) {
		t.Errorf("got first %+v, want db-000 with its two tags", got[0])
	}
	// 230 instances carry env: three pages.
	before := s.Calls("/resource-instances/action")
	all, err := c.InstancesByTags(ctx, []upgrade.TagFilter{{Key: "env"}})
	if err != nil || len(all) != 230 {
		t.Fatalf("env=any: got %d, %v, want 230", len(all), err)
	}
	if n := s.Calls("/resource-instances/action") - before; n != 3 {
		t.Errorf("got %d calls for 230 instances, want 3 pages", n)
	}

	// TaggedIDs ORs its tags: env=stage OR team=db.
	set, err := c.TaggedIDs(ctx, []upgrade.Tag{{Key: "env", Value: "stage"}, {Key: "team", Value: "db"}})
	if err != nil {
		t.Fatal(err)
	}
	want := idsWhere(fleet, func(i int) bool { return i%2 == 1 || i%3 == 0 })
	if len(set) != len(want) {
		t.Errorf("env=stage OR team=db: got %d, want %d", len(set), len(want))
	}
	for _, id := range want {
		if !set[id] {
			t.Errorf("missing %s", id)
			break
		}
	}
	sel := upgrade.Selector{Tags: []upgrade.Tag{{Key: "env", Value: "stage"}, {Key: "team", Value: "db"}}}
	if got := upgrade.Select(fleet, set, sel); len(got) != len(want) {
		t.Errorf("Select with the tagged set: got %d, want %d", len(got), len(want))
	}
	// Values of one key share a query.
	before = s.Calls("/resource-instances/action")
	if set, err := c.TaggedIDs(ctx, []upgrade.Tag{{Key: "env", Value: "stage"}, {Key: "env", Value: "prod"}}); err != nil || len(set) != 230 {
		t.Errorf("env=stage OR env=prod: got %d, %v, want 230", len(set), err)
	}
	if n := s.Calls("/resource-instances/action") - before; n != 3 {
		t.Errorf("got %d calls, want one paged query (3)", n)
	}
	if set, err := c.TaggedIDs(ctx, nil); err != nil || len(set) != 0 {
		t.Errorf("no tags: got %v, %v", set, err)
	}
}

func TestInstancesByTagsValidation(t *testing.T) {
	c, err := upgrade.NewClient(closedURL(t), "p", upgrade.TokenAuth(testToken))
	if err != nil {
		t.Fatal(err)
	}
	many := make([]upgrade.TagFilter, 21)
	for i := range many {
		many[i] = upgrade.TagFilter{Key: fmt.Sprint("k", i)}
	}
	for _, q := range []upgrade.TagQuery{{Limit: 101}, {Limit: -1}, {Offset: -1}, {Tags: many}, {Tags: []upgrade.TagFilter{{Key: " "}}}} {
		if _, err := c.ListInstancesByTags(context.Background(), q); !upgrade.NotSent(err) {
			t.Errorf("%+v: got %v, want a not-sent error", q, err)
		}
	}
}

// The fake refuses what the API refuses.
func TestFakeTagQueryStrict(t *testing.T) {
	s, _ := tagFleet(t, 3)
	post := func(body string) (int, map[string]any) {
		req, _ := http.NewRequest(http.MethodPost, s.URL+"/v3/"+s.ProjectID+"/instances/resource-instances/action", bytes.NewBufferString(body))
		req.Header.Set("X-Auth-Token", testToken)
		resp, err := s.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	tests := []struct {
		body   string
		status int
		want   string
	}{
		{`{"action":"filter","limit":"101"}`, 400, "limit"},
		{`{"action":"filter","limit":"0"}`, 400, "limit"},
		{`{"action":"filter","limit":100}`, 400, "limit"}, // a number, not the documented string
		{`{"action":"filter","offset":"-1"}`, 400, "offset"},
		{`{"action":"list"}`, 400, "action"},
		{`{}`, 400, "action"},
		{`{"action":"filter","tags":[{"key":"env"}]}`, 400, "values"},
		{`{"action":"filter","tags":[{"key":"","values":[]}]}`, 400, "key"},
		{`{"action":"count","limit":"10"}`, 400, "count"},
		{`{"action":"filter","tags":[{"key":"env","values":["prod"]}]}`, 200, "instances"},
		{`{"action":"count","tags":[{"key":"env","values":[]}]}`, 200, "total_count"},
	}
	for _, tt := range tests {
		status, m := post(tt.body)
		b, _ := json.Marshal(m)
		if status != tt.status || !strings.Contains(string(b), tt.want) {
			t.Errorf("%s: got %d %s, want %d mentioning %q", tt.body, status, b, tt.status, tt.want)
		}
	}
	if _, m := post(`{"action":"count","tags":[{"key":"env","values":[]}]}`); m["total_count"] != float64(3) || m["instances"] != nil {
		t.Errorf("count: got %v, want total_count 3 only", m)
	}
}

func TestSelectInstances(t *testing.T) {
	s, fleet := tagFleet(t, 12)
	influx := upgradetest.NewInstance("metrics-1", "influxdb")
	s.AddInstance(influx)
	s.SetTags(influx.ID, map[string]string{"env": "prod"})
	c := newTokenClient(t, s)
	ctx := context.Background()
	ids := func(ins []upgrade.Instance) []string {
		var out []string
		for _, in := range ins {
			out = append(out, in.ID)
		}
		sort.Strings(out)
		return out
	}
	tests := []struct {
		name string
		sel  upgrade.Selector
		want []string
	}{
		{"zero", upgrade.Selector{}, nil},
		{"engine", upgrade.Selector{Engines: []string{"influxdb"}}, []string{influx.ID}},
		{"tag and engine", upgrade.Selector{Engines: []string{"cassandra"}, Tags: []upgrade.Tag{{Key: "env", Value: "prod"}}},
			idsWhere(fleet, func(i int) bool { return i%2 == 0 })},
		{"tag and name", upgrade.Selector{Names: []string{"db-00?", "metrics-*"}, Tags: []upgrade.Tag{{Key: "env", Value: "prod"}}},
			append(idsWhere(fleet, func(i int) bool { return i%2 == 0 && i < 10 }), influx.ID)},
		{"tag nobody has", upgrade.Selector{All: true, Tags: []upgrade.Tag{{Key: "env", Value: "dev"}}}, nil},
		{"all", upgrade.Selector{All: true}, append(idsWhere(fleet, func(int) bool { return true }), influx.ID)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := s.Calls("")
			got, err := c.SelectInstances(ctx, tt.sel)
			if err != nil {
				t.Fatal(err)
			}
			want := slices.Clone(tt.want)
			sort.Strings(want)
			if g := ids(got); !slices.Equal(g, want) {
				t.Errorf("got %v, want %v", g, want)
			}
			if tt.sel.IsZero() && s.Calls("") != before {
				t.Error("a zero selector made a call")
			}
		})
	}
}
