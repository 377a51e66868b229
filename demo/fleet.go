package demo

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade/upgradetest"
)

// window says where an instance's maintenance window lies relative to the
// demo's start: open now, or opening hours later.
type window int

const (
	noWindow   window = iota
	openNow           // opened an hour or two ago, closes hours from now
	openLater         // opens in five hours
	openLater2        // opens in seven hours
	openSoon          // opens a few minutes after the demo starts, to watch --wait-for-window
)

// soonAfter is how long after the demo starts (its clock) an openSoon
// window opens, at most: the start's minute plus this, as windows are
// whole minutes. At --speed 10 that is under half a minute.
const soonAfter = 4 * time.Minute

// seed is one instance of the demo fleet.
type seed struct {
	name     string
	engine   string
	whole    string // whole version now
	next     string // whole version after the patch; "" = no patch available
	status   string // "normal" or "abnormal"
	window   window
	startAgo time.Duration // for openNow: how long ago the window opened
	job      time.Duration // how long its patch job runs
	fail     string        // the job fails with this reason
	env      string        // its env tag: prod, staging or dev (its team tag is the second part of its name)
}

// failReason is what the one failing job of the fleet says, in the words
// of the jobs API.
const failReason = "Rolling restart timed out: node cass-orders-prod-2_node_2 did not rejoin the cluster within 900 s; the instance was rolled back to 3.11.3.2."

// fleet is the demo's GeminiDB project: 36 instances, mostly patchable
// Cassandra and Influx ones at a few versions, tagged env (prod, staging,
// dev) and team; one without a patch, one abnormal, a few outside their
// maintenance window, jobs of 10–30 s and one that fails.
var fleet = []seed{
	{name: "cass-orders-prod-1", engine: "cassandra", whole: "3.11.3.2", next: "3.11.3.5", status: "normal", window: openNow, startAgo: time.Hour, job: 14 * time.Second, env: "prod"},
	{name: "cass-orders-prod-2", engine: "cassandra", whole: "3.11.3.2", next: "3.11.3.5", status: "normal", window: openNow, startAgo: time.Hour, job: 21 * time.Second, fail: failReason, env: "prod"},
	{name: "cass-sessions-prod", engine: "cassandra", whole: "3.11.3.2", next: "3.11.3.5", status: "normal", window: openNow, startAgo: 2 * time.Hour, job: 18 * time.Second, env: "prod"},
	{name: "cass-catalog-prod", engine: "cassandra", whole: "3.11.3.3", next: "3.11.3.5", status: "normal", window: openNow, startAgo: 2 * time.Hour, job: 25 * time.Second, env: "prod"},
	{name: "cass-search-staging", engine: "cassandra", whole: "3.11.3.2", next: "3.11.3.5", status: "normal", window: noWindow, job: 11 * time.Second, env: "staging"},
	{name: "cass-payments-prod", engine: "cassandra", whole: "3.11.3.2", next: "3.11.3.5", status: "normal", window: openLater, job: 16 * time.Second, env: "prod"},
	{name: "cass-ledger-prod", engine: "cassandra", whole: "3.11.3.2", next: "3.11.3.5", status: "abnormal", window: openNow, startAgo: time.Hour, job: 20 * time.Second, env: "prod"},
	{name: "influx-metrics-eu-1", engine: "influxdb", whole: "1.8.4.1", next: "1.8.4.3", status: "normal", window: openNow, startAgo: time.Hour, job: 12 * time.Second, env: "prod"},
	{name: "influx-metrics-eu-2", engine: "influxdb", whole: "1.8.4.1", next: "1.8.4.3", status: "normal", window: openNow, startAgo: time.Hour, job: 16 * time.Second, env: "prod"},
	{name: "influx-billing-staging", engine: "influxdb", whole: "1.8.4.2", next: "1.8.4.3", status: "normal", window: noWindow, job: 28 * time.Second, env: "staging"},
	{name: "influx-iot-prod", engine: "influxdb", whole: "1.8.4.1", next: "1.8.4.3", status: "normal", window: openLater2, job: 23 * time.Second, env: "prod"},
	{name: "influx-alerts-prod", engine: "influxdb", whole: "1.8.4.1", next: "1.8.4.3", status: "normal", window: openSoon, job: 13 * time.Second, env: "prod"},
	{name: "influx-legacy-1", engine: "influxdb", whole: "1.7.10.2", status: "normal", window: openNow, startAgo: time.Hour, env: "staging"},
	{name: "cass-orders-prod-3", engine: "cassandra", whole: "3.11.3.2", next: "3.11.3.5", status: "normal", window: openNow, startAgo: time.Hour, job: 15 * time.Second, env: "prod"},
	{name: "cass-orders-prod-4", engine: "cassandra", whole: "3.11.3.2", next: "3.11.3.5", status: "normal", window: openNow, startAgo: time.Hour, job: 17 * time.Second, env: "prod"},
	{name: "cass-users-prod-1", engine: "cassandra", whole: "3.11.3.3", next: "3.11.3.5", status: "normal", window: openNow, startAgo: 2 * time.Hour, job: 19 * time.Second, env: "prod"},
	{name: "cass-users-prod-2", engine: "cassandra", whole: "3.11.3.3", next: "3.11.3.5", status: "normal", window: openNow, startAgo: 2 * time.Hour, job: 22 * time.Second, env: "prod"},
	{name: "cass-users-prod-3", engine: "cassandra", whole: "3.11.3.3", next: "3.11.3.5", status: "normal", window: openNow, startAgo: 2 * time.Hour, job: 24 * time.Second, env: "prod"},
	{name: "cass-inventory-prod", engine: "cassandra", whole: "3.11.3.2", next: "3.11.3.5", status: "normal", window: openNow, startAgo: time.Hour, job: 13 * time.Second, env: "prod"},
	{name: "cass-carts-prod", engine: "cassandra", whole: "3.11.3.3", next: "3.11.3.5", status: "normal", window: openNow, startAgo: time.Hour, job: 26 * time.Second, env: "prod"},
	{name: "cass-analytics-prod-1", engine: "cassandra", whole: "3.11.3.2", next: "3.11.3.5", status: "normal", window: openNow, startAgo: 2 * time.Hour, job: 18 * time.Second, env: "prod"},
	{name: "cass-analytics-prod-2", engine: "cassandra", whole: "3.11.3.2", next: "3.11.3.5", status: "normal", window: openNow, startAgo: 2 * time.Hour, job: 20 * time.Second, env: "prod"},
	{name: "cass-orders-staging", engine: "cassandra", whole: "3.11.3.2", next: "3.11.3.5", status: "normal", window: noWindow, job: 12 * time.Second, env: "staging"},
	{name: "cass-users-staging", engine: "cassandra", whole: "3.11.3.3", next: "3.11.3.5", status: "normal", window: noWindow, job: 14 * time.Second, env: "staging"},
	{name: "cass-payments-staging", engine: "cassandra", whole: "3.11.3.2", next: "3.11.3.5", status: "normal", window: noWindow, job: 16 * time.Second, env: "staging"},
	{name: "cass-reports-staging", engine: "cassandra", whole: "3.11.3.3", next: "3.11.3.5", status: "normal", window: noWindow, job: 11 * time.Second, env: "staging"},
	{name: "cass-sandbox-dev-1", engine: "cassandra", whole: "3.11.3.1", next: "3.11.3.5", status: "normal", window: noWindow, job: 10 * time.Second, env: "dev"},
	{name: "cass-sandbox-dev-2", engine: "cassandra", whole: "3.11.3.1", next: "3.11.3.5", status: "normal", window: noWindow, job: 12 * time.Second, env: "dev"},
	{name: "influx-metrics-eu-3", engine: "influxdb", whole: "1.8.4.1", next: "1.8.4.3", status: "normal", window: openNow, startAgo: time.Hour, job: 15 * time.Second, env: "prod"},
	{name: "influx-metrics-eu-4", engine: "influxdb", whole: "1.8.4.1", next: "1.8.4.3", status: "normal", window: openNow, startAgo: time.Hour, job: 17 * time.Second, env: "prod"},
	{name: "influx-logs-prod-1", engine: "influxdb", whole: "1.8.4.2", next: "1.8.4.3", status: "normal", window: openNow, startAgo: 2 * time.Hour, job: 21 * time.Second, env: "prod"},
	{name: "influx-logs-prod-2", engine: "influxdb", whole: "1.8.4.2", next: "1.8.4.3", status: "normal", window: openNow, startAgo: 2 * time.Hour, job: 19 * time.Second, env: "prod"},
	{name: "influx-metrics-staging", engine: "influxdb", whole: "1.8.4.2", next: "1.8.4.3", status: "normal", window: noWindow, job: 13 * time.Second, env: "staging"},
	{name: "influx-iot-staging", engine: "influxdb", whole: "1.8.4.1", next: "1.8.4.3", status: "normal", window: noWindow, job: 15 * time.Second, env: "staging"},
	{name: "influx-sandbox-dev", engine: "influxdb", whole: "1.8.4.0", next: "1.8.4.3", status: "normal", window: noWindow, job: 11 * time.Second, env: "dev"},
	{name: "influx-edge-dev", engine: "influxdb", whole: "1.8.4.0", next: "1.8.4.3", status: "normal", window: noWindow, job: 14 * time.Second, env: "dev"},
}

// tags are the seed's instance tags: env, and team (the second part of
// its name: cass-orders-prod-1 is team orders).
func (s seed) tags() map[string]string {
	t := map[string]string{"env": s.env}
	if parts := strings.Split(s.name, "-"); len(parts) > 1 {
		t["team"] = parts[1]
	}
	return t
}

// idSuffix is the engine part of real GeminiDB instance IDs.
var idSuffix = map[string]string{"cassandra": "in06", "influxdb": "in13"}

// stableHex is 32 hex digits derived from s: IDs that look real and are
// the same in every run, so the transcript does not change.
func stableHex(s string) string {
	sum := sha256.Sum256([]byte("geminidb-patch-bot demo/" + s))
	return hex.EncodeToString(sum[:16])
}

// clockWindow renders the window [from, from+d) as "HH:MM-HH:MM" (UTC).
func clockWindow(from time.Time, d time.Duration) string {
	return from.UTC().Format("15:04") + "-" + from.Add(d).UTC().Format("15:04")
}

// instance builds the seed's instance; windows are placed relative to
// anchor, and an openSoon window relative to start (the demo's clock when
// it starts).
func (s seed) instance(anchor, start time.Time) upgrade.Instance {
	in := upgrade.Instance{
		ID:             stableHex(s.name) + idSuffix[s.engine],
		Name:           s.name,
		Status:         s.status,
		Engine:         s.engine,
		Version:        majorMinor(s.whole),
		WholeVersion:   s.whole,
		PatchAvailable: s.next != "",
		Mode:           "Cluster",
	}
	switch s.window {
	case openNow:
		in.MaintenanceWindow = clockWindow(anchor.Add(-s.startAgo), 4*time.Hour)
	case openLater:
		in.MaintenanceWindow = clockWindow(anchor.Add(5*time.Hour), 4*time.Hour)
	case openLater2:
		in.MaintenanceWindow = clockWindow(anchor.Add(7*time.Hour), 3*time.Hour)
	case openSoon:
		in.MaintenanceWindow = clockWindow(start.Truncate(time.Minute).Add(soonAfter), 2*time.Hour)
	}
	for i := 1; i <= 3; i++ {
		node := upgrade.Node{
			ID:     stableHex(fmt.Sprintf("%s/node/%d", s.name, i)) + fmt.Sprintf("no%02d", i),
			Name:   fmt.Sprintf("%s_node_%d", s.name, i),
			Status: "normal",
		}
		if s.status != "normal" && i == 2 {
			node.Status = s.status
		}
		in.Nodes = append(in.Nodes, node)
	}
	return in
}

// majorMinor is the datastore version of a whole version: "3.11" of "3.11.3.2".
func majorMinor(whole string) string {
	dots := 0
	for i, r := range whole {
		if r == '.' {
			if dots++; dots == 2 {
				return whole[:i]
			}
		}
	}
	return whole
}

// seedFleet adds the fleet to the fake GeminiDB, with maintenance windows
// placed relative to anchor (and start, see seed.instance) and every patch
// job's outcome set.
func seedFleet(gdb *upgradetest.Server, anchor, start time.Time) {
	for _, s := range fleet {
		in := s.instance(anchor, start)
		gdb.AddInstance(in)
		gdb.SetTags(in.ID, s.tags())
		if s.job > 0 {
			gdb.SetJobOutcome(in.ID, upgradetest.JobOutcome{Duration: s.job, NewVersion: s.next, FailReason: s.fail})
		}
	}
}

// jobIDs returns a generator of job IDs of the real shape (UUID v4) that
// are the same in every run.
func jobIDs() func() string {
	n := 0
	return func() string {
		n++
		h := []byte(stableHex(fmt.Sprintf("job/%d", n)))
		h[12] = '4'
		h[16] = "89ab"[h[16]%4]
		return fmt.Sprintf("%s-%s-%s-%s-%s", h[0:8], h[8:12], h[12:16], h[16:20], h[20:32])
	}
}
