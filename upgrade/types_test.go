package upgrade_test

import (
	"context"
	"testing"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade/upgradetest"
)

func TestInstanceUpgrading(t *testing.T) {
	tests := []struct {
		name    string
		status  string
		actions []string
		want    bool
	}{
		{name: "idle", status: "normal"},
		{name: "idle, empty actions", status: "normal", actions: []string{}},
		{name: "blank action", status: "normal", actions: []string{""}},
		{name: "batch patch running (as the fake shows it)", status: "normal", actions: []string{"UPGRADE_DB_VERSION"}, want: true},
		{name: "task-list name of a patch", status: "normal", actions: []string{"UPGRADE_DATABASE"}, want: true},
		{name: "job name of a patch", status: "normal", actions: []string{"UpgradeDbVersion"}, want: true},
		{name: "lower case", status: "normal", actions: []string{"upgrade_db_version"}, want: true},
		{name: "patch among others", status: "normal", actions: []string{"BACKUP", "DB_PATCH"}, want: true},
		{name: "reboot only", status: "normal", actions: []string{"REBOOT"}},
		{name: "resize only", status: "normal", actions: []string{"RESIZE_FLAVOR", "ENLARGE_NODE"}},
		{name: "upgrading status", status: "upgrading", want: true},
		{name: "patching status", status: "PATCHING", want: true},
		{name: "abnormal", status: "abnormal"},
		{name: "frozen", status: "frozen"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := upgrade.Instance{ID: "a", Status: tt.status, Actions: tt.actions}
			if got := in.Upgrading(); got != tt.want {
				t.Errorf("Instance{Status: %q, Actions: %q}.Upgrading() = %v, want %v", tt.status, tt.actions, got, tt.want)
			}
		})
	}
}

// An instance whose batch patch was submitted shows as upgrading in the
// instance list until its job ends.
func TestInstanceUpgradingFromList(t *testing.T) {
	s := upgradetest.NewServer(t, upgradetest.WithToken(testToken))
	in := upgradetest.NewInstance("cass-1", "cassandra")
	s.AddInstance(in)
	c := newTokenClient(t, s)
	ctx := context.Background()
	upgrading := func() bool {
		t.Helper()
		page, err := c.ListInstances(ctx, upgrade.ListOptions{ID: in.ID})
		if err != nil || len(page.Instances) != 1 {
			t.Fatalf("ListInstances: %v, %d instances", err, len(page.Instances))
		}
		return page.Instances[0].Upgrading()
	}
	if upgrading() {
		t.Fatal("got upgrading before any patch, want not")
	}
	res, err := c.BatchUpgrade(ctx, []string{in.ID})
	if err != nil || len(res) != 1 || !res[0].Submitted() {
		t.Fatalf("BatchUpgrade: %+v, %v", res, err)
	}
	if !upgrading() {
		t.Error("got not upgrading while the patch job runs, want upgrading")
	}
	s.CompleteJob(res[0].JobID, "3.11.4")
	if upgrading() {
		t.Error("got upgrading after the job completed, want not")
	}
}
