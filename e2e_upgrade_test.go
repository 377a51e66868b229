package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/config"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/secret"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade/upgradetest"
)

// window returns a maintenance window "HH:00-HH:00" starting from hours
// after the current UTC hour and lasting length hours.
func window(from, length int) string {
	h := time.Now().UTC().Hour()
	start := ((h+from)%24 + 24) % 24
	return fmt.Sprintf("%02d:00-%02d:00", start, (start+length)%24)
}

// Outside its maintenance window an instance is skipped unless --force;
// with --force it is patched and the channel message records the override.
func TestMaintenanceWindowAndForce(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	insts := h.addInstances("db", "cassandra", 2)
	inside, outside := insts[0], insts[1]
	h.gdb.SetInstance(inside.ID, func(in *upgrade.Instance) { in.MaintenanceWindow = window(-1, 4) })
	h.gdb.SetInstance(outside.ID, func(in *upgrade.Instance) { in.MaintenanceWindow = window(3, 4) })

	_, planMsg, _ := h.plan(alice, inside.Name+" "+outside.Name)
	text := planMsg.AllText()
	if !strings.Contains(text, "1 instance to patch") || !strings.Contains(text, "outside its maintenance window") || !strings.Contains(text, "--force") {
		t.Errorf("plan without --force should skip the instance outside its window and mention --force:\n%s", text)
	}

	id, planMsg, ack := h.plan(alice, inside.Name+" "+outside.Name+" --force")
	if !strings.Contains(planMsg.AllText(), "2 instances to patch") || !strings.Contains(planMsg.AllText(), ":warning:") {
		t.Errorf("plan with --force should include both, with a warning:\n%s", planMsg.AllText())
	}
	h.click(alice, "patch_confirm", id, ack.ResponseURL, 0)
	parent := h.parent(id)
	if !strings.Contains(parent.AllText(), "Forced outside the maintenance window") || !strings.Contains(parent.AllText(), outside.Name) {
		t.Errorf("channel message should acknowledge the --force override for %s:\n%s", outside.Name, parent.AllText())
	}
	h.threadText(parent.TS, "2 submitted")
}

// --dry-run shows the plan with no buttons and stores nothing to confirm.
func TestDryRun(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	in := h.addInstances("db", "cassandra", 1)[0]
	id, planMsg, _ := h.plan(alice, in.Name+" --dry-run")
	if id != "" || buttonValue(planMsg.Blocks, "patch_cancel") != "" {
		t.Errorf("dry-run plan has buttons:\n%s", planMsg.AllText())
	}
	if !strings.Contains(planMsg.AllText(), "Dry run") || !strings.Contains(planMsg.AllText(), in.ID) {
		t.Errorf("dry-run plan = %q, want the instance and a dry-run note", planMsg.AllText())
	}
}

// list shows the instances that have a patch available, with versions.
func TestListCommand(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	cass := h.addInstances("cass", "cassandra", 2)
	influx := h.addInstances("influx", "influxdb", 1)[0]
	h.gdb.SetInstance(cass[1].ID, func(in *upgrade.Instance) { in.PatchAvailable = false })

	ack := h.slash(alice, opsChannel, "list")
	c := h.reply(ack.ResponseURL, "with a patch available")
	text := c.AllText()
	if !strings.Contains(text, cass[0].Name) || !strings.Contains(text, influx.Name) || !strings.Contains(text, "3.11") {
		t.Errorf("list lacks a patchable instance or its version:\n%s", text)
	}
	if strings.Contains(text, cass[1].Name) {
		t.Errorf("list shows %s, which has no patch available:\n%s", cass[1].Name, text)
	}
	ack = h.slash(alice, opsChannel, "list influxdb")
	c = h.reply(ack.ResponseURL, "with a patch available")
	if strings.Contains(c.AllText(), cass[0].Name) || !strings.Contains(c.AllText(), influx.Name) {
		t.Errorf("list influxdb = %q, want only influx instances", c.AllText())
	}
}

// An ambiguous name is not patched: the plan lists the matching IDs.
func TestAmbiguousName(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	a := upgradetest.NewInstance("twin", "cassandra")
	b := upgradetest.NewInstance("twin", "cassandra")
	h.gdb.AddInstance(a)
	h.gdb.AddInstance(b)
	id, planMsg, _ := h.plan(alice, "twin")
	if id != "" {
		t.Error("an ambiguous name produced a confirmable plan")
	}
	for _, want := range []string{a.ID, b.ID} {
		if !strings.Contains(planMsg.AllText(), want) {
			t.Errorf("plan does not list matching ID %s:\n%s", want, planMsg.AllText())
		}
	}
}

// An API error during lookup reaches the user with its code, message and
// the call that failed.
func TestLookupErrorIsShown(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	in := h.addInstances("db", "cassandra", 1)[0]
	h.gdb.FailNext("/instances", 403, "DBS.280032", "The IAM user does not have the permission.", 100)
	ack := h.slash(alice, opsChannel, in.Name)
	c := h.reply(ack.ResponseURL, "DBS.280032")
	for _, want := range []string{"The IAM user does not have the permission.", "GET", "/instances", "nothing was done"} {
		if !strings.Contains(c.AllText(), want) {
			t.Errorf("error reply lacks %q: %s", want, c.AllText())
		}
	}
}

// Every GeminiDB auth mode gets through the fake's real credential checks.
func TestAuthModesEndToEnd(t *testing.T) {
	const (
		domain, user, password = "acme-domain", "patch-bot", "iam-pass-5b1c9e"
		ak, sk                 = "AKTESTKEY0001", "sk-secret-8e2f6d"
	)
	tests := []struct {
		name string
		opts []upgradetest.ServerOption
		cfg  func(c *config.Config, gdb string)
	}{
		{"iam", []upgradetest.ServerOption{upgradetest.WithIAMUser(domain, user, password)}, func(c *config.Config, gdb string) {
			c.GeminiDBAuthToken = ""
			c.GeminiDBIAMEndpoint = gdb
			c.GeminiDBIAMUsername = user
			c.GeminiDBIAMPassword = secret.Secret(password)
			c.GeminiDBIAMDomain = domain
		}},
		{"aksk", []upgradetest.ServerOption{upgradetest.WithAKSK(ak, sk)}, func(c *config.Config, _ string) {
			c.GeminiDBAuthToken = ""
			c.GeminiDBAccessKey = secret.Secret(ak)
			c.GeminiDBSecretKey = secret.Secret(sk)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarnessWith(t, tt.opts, func(c *config.Config) { tt.cfg(c, c.GeminiDBEndpoint) })
			insts := h.addInstances("db", "cassandra", 2)
			id, _, ack := h.plan(alice, insts[0].Name+" "+insts[1].Name)
			if id == "" {
				t.Fatalf("no confirmable plan; replies: %s\nlogs:\n%s", h.repliesTo(ack.ResponseURL), h.logs.String())
			}
			h.click(alice, "patch_confirm", id, ack.ResponseURL, 0)
			h.threadText(h.parent(id).TS, "2 submitted")
			if tt.name == "iam" && h.gdb.Logins() != 1 {
				t.Errorf("IAM logins = %d, want 1 (token cached)", h.gdb.Logins())
			}
		})
	}
}

// Looking up N instances in a fleet of 250 costs at most min(N, 3) list
// calls, from the first command on (the bot learns the fleet size at start).
func TestLookupCostStaysWithinBound(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	insts := h.addInstances("db", "cassandra", 250)
	h.restart() // a bot starting against an existing fleet
	tests := []struct {
		name string
		refs []string
		max  int
	}{
		{"two names", []string{insts[7].Name, insts[201].Name}, 2},
		{"five names", []string{insts[1].Name, insts[50].Name, insts[120].Name, insts[180].Name, insts[249].Name}, 3},
		{"one ID", []string{insts[3].ID}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := h.gdb.Calls("/instances")
			h.plan(alice, strings.Join(tt.refs, " ")+" --dry-run")
			if n := h.gdb.Calls("/instances") - before; n > tt.max {
				t.Errorf("looking up %d instances cost %d list calls, want at most %d", len(tt.refs), n, tt.max)
			}
		})
	}
}
