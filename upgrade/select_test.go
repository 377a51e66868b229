package upgrade_test

import (
	"slices"
	"testing"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

func TestMatchGlob(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"orders-prod", "orders-prod", true},
		{"orders", "orders-prod", false}, // whole name, not a prefix
		{"orders-*", "orders-prod", true},
		{"orders-*", "orders-", true},
		{"*-prod", "orders-prod", true},
		{"*-prod", "orders-prod-2", false},
		{"*prod*", "orders-prod-2", true},
		{"cass-?", "cass-1", true},
		{"cass-?", "cass-12", false},
		{"cass-??", "cass-12", true},
		{"?", "", false},
		{"*", "", true},
		{"*", "anything", true},
		{"a*b*c", "a-b-x-c", true},
		{"a*b*c", "a-c-b", false},
		{"a**b", "ab", true},
		{"Orders-*", "orders-1", false}, // case matters, as in the API's names
		{"*a*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false},
		{"db[1]", "db[1]", true}, // no character classes
	}
	for _, tt := range tests {
		if got := upgrade.MatchGlob(tt.pattern, tt.name); got != tt.want {
			t.Errorf("MatchGlob(%q, %q): got %v, want %v", tt.pattern, tt.name, got, tt.want)
		}
	}
}

func TestSelect(t *testing.T) {
	fleet := []upgrade.Instance{
		{ID: "c1", Name: "orders-prod-1", Engine: "cassandra"},
		{ID: "c2", Name: "orders-stage-1", Engine: "cassandra"},
		{ID: "i1", Name: "metrics-prod-1", Engine: "influxdb"},
		{ID: "i2", Name: "metrics-stage", Engine: "influxdb"},
		{ID: "r1", Name: "cache-prod", Engine: "redis"},
	}
	tagged := map[string]bool{"c1": true, "i2": true, "r1": true}
	tests := []struct {
		name string
		sel  upgrade.Selector
		want []string
	}{
		{"zero selects nothing", upgrade.Selector{}, nil},
		{"all", upgrade.Selector{All: true}, []string{"c1", "c2", "i1", "i2", "r1"}},
		{"one engine", upgrade.Selector{Engines: []string{"cassandra"}}, []string{"c1", "c2"}},
		{"engine case", upgrade.Selector{Engines: []string{"InfluxDB"}}, []string{"i1", "i2"}},
		{"engines OR", upgrade.Selector{Engines: []string{"cassandra", "influxdb"}}, []string{"c1", "c2", "i1", "i2"}},
		{"name glob", upgrade.Selector{Names: []string{"*-prod-?"}}, []string{"c1", "i1"}},
		{"names OR", upgrade.Selector{Names: []string{"orders-*", "cache-prod"}}, []string{"c1", "c2", "r1"}},
		{"engine AND name", upgrade.Selector{Engines: []string{"cassandra"}, Names: []string{"*-prod-*"}}, []string{"c1"}},
		{"tag", upgrade.Selector{Tags: []upgrade.Tag{{Key: "env", Value: "prod"}}}, []string{"c1", "i2", "r1"}},
		{"tag AND engine", upgrade.Selector{Tags: []upgrade.Tag{{Key: "env", Value: "prod"}}, Engines: []string{"influxdb"}}, []string{"i2"}},
		{"all AND engine", upgrade.Selector{All: true, Engines: []string{"redis"}}, []string{"r1"}},
		{"every kind", upgrade.Selector{Engines: []string{"cassandra", "redis"}, Names: []string{"*-prod*"}, Tags: []upgrade.Tag{{Key: "k", Value: "v"}}}, []string{"c1", "r1"}},
		{"nothing matches", upgrade.Selector{Names: []string{"nope"}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, in := range upgrade.Select(fleet, tagged, tt.sel) {
				got = append(got, in.ID)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	if got := upgrade.Select(fleet, nil, upgrade.Selector{Tags: []upgrade.Tag{{Key: "env", Value: "prod"}}}); len(got) != 0 {
		t.Errorf("tag selector without a tagged set: got %d instances, want none", len(got))
	}
}
