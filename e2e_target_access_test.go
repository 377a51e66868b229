package main

import (
	"strings"
	"testing"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/config"
)

// A target's allowed_channels and allowed_users are enforced: --target
// from another channel is refused, so is a person the target does not
// allow, on the command and on a click (issue 19).
func TestTargetAllowedChannelsAndUsers(t *testing.T) {
	t.Parallel()
	th := newTargetsHarness(t, "", "    allowed_channels: ["+nlChannel+"]\n    allowed_users: ["+alice+"]\n",
		func(c *config.Config) { c.AllowedUsers = []string{alice, bob} })
	_, nl := th.twin("cass-orders")

	ack := th.slash(alice, deChannel, "cass-orders --target "+nlTarget)
	if c := th.reply(ack.ResponseURL, "cannot be used in this channel"); strings.Contains(c.AllText(), "Confirm") {
		t.Errorf("a refused --target shows a plan:\n%s", c.AllText())
	}
	ack = th.slash(bob, nlChannel, "cass-orders")
	th.reply(ack.ResponseURL, "not allowed to patch the GeminiDB target")

	id, _, ack := th.planIn(alice, nlChannel, "cass-orders")
	th.clickIn(alice, nlChannel, "patch_confirm", id, ack.ResponseURL)
	ts := th.parentIn(nlChannel, id).TS
	th.threadIn(nlChannel, ts, "Batch results")
	th.nl.FailJob(th.nl.JobsFor(nl.ID)[0], "Disk full.")
	th.threadIn(nlChannel, ts, "finished", "Retry 1 instance")
	// Retry may be pressed by any allowed user: not by one the target
	// does not allow.
	th.clickIn(bob, nlChannel, "patch_retry", id, th.slack.NewResponseURL(nlChannel, ""))
	th.ephemeralTo(bob, "not allowed to patch the GeminiDB target")
	if n := len(th.nl.BatchCalls()); n != 1 {
		t.Errorf("%d batch calls on %s, want 1", n, nlTarget)
	}
	if strings.Contains(th.logs.String(), "not enforced") {
		t.Error("the start-up still warns that allowed_channels and allowed_users are not enforced")
	}
}
