package bot

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/slack-go/slack"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/patch"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// skipLocked moves the instances of plan whose lock another request holds
// (they are being patched) from its targets to its skipped ones, naming
// the holder: a wave would never send them anyway.
func (b *Bot) skipLocked(ctx context.Context, target string, plan upgrade.Plan) (upgrade.Plan, error) {
	var ids []string
	for _, t := range plan.Targets {
		ids = append(ids, t.Instance.ID)
	}
	for _, sk := range plan.Skipped {
		if sk.Instance != nil {
			ids = append(ids, sk.Instance.ID)
		}
	}
	if len(ids) == 0 {
		return plan, nil
	}
	held, err := b.st.LockHolders(ctx, patch.LockKeys(target, ids))
	if err != nil {
		return plan, fmt.Errorf("read instance locks: %w", err)
	}
	if len(held) == 0 {
		return plan, nil
	}
	// Skipped already (e.g. the upgrade shows as an operation in
	// progress): say whose it is first.
	for i, sk := range plan.Skipped {
		if sk.Instance == nil {
			continue
		}
		if h, ok := held[store.LockKey(target, sk.Instance.ID)]; ok {
			plan.Skipped[i].Reason = patch.HolderText(ctx, b.st, h) + " (" + sk.Reason + ")"
			plan.Skipped[i].OutsideWindow = false
		}
	}
	locked := map[string]bool{}
	var keep []upgrade.PlanItem
	for _, t := range plan.Targets {
		h, ok := held[store.LockKey(target, t.Instance.ID)]
		if !ok {
			keep = append(keep, t)
			continue
		}
		locked[t.Instance.ID] = true
		in := t.Instance
		plan.Skipped = append(plan.Skipped, upgrade.Skip{Ref: t.Ref, Instance: &in, Reason: patch.HolderText(ctx, b.st, h)})
	}
	plan.Targets = keep
	if plan.Targets == nil {
		plan.Targets = []upgrade.PlanItem{}
	}
	var batches []upgrade.Batch
	for _, bt := range plan.Batches {
		bt.InstanceIDs = slices.DeleteFunc(slices.Clone(bt.InstanceIDs), func(id string) bool { return locked[id] })
		if len(bt.InstanceIDs) > 0 {
			batches = append(batches, bt)
		}
	}
	plan.Batches = batches
	return plan, nil
}

// lockedInstance answers "status <instance>" for an instance of target
// whose lock a request holds: which request patches it, and whose.
func (b *Bot) lockedInstance(ctx context.Context, target, id string) (string, bool) {
	held, err := b.st.LockHolders(ctx, []string{store.LockKey(target, id)})
	if err != nil || len(held) == 0 {
		return "", false
	}
	for _, h := range held {
		return fmt.Sprintf("Instance `%s` is %s; `status %s` shows that request (in its channel).", esc(id), esc(patch.HolderText(ctx, b.st, h)), esc(h)), true
	}
	return "", false
}

// unexpectedText names the rows of a batch answer for instances that were
// not sent (at most 10 of them).
func unexpectedText(rows []upgrade.UpgradeResult) string {
	var lines []string
	for i, u := range rows {
		if i == 10 {
			lines = append(lines, fmt.Sprintf("… and %d more (see the bot's log)", len(rows)-10))
			break
		}
		what := "job `" + esc(u.JobID) + "` (followed)"
		if u.JobID == "" {
			what = "`" + esc(u.ErrorCode) + "` " + esc(u.ErrorMessage)
		}
		lines = append(lines, fmt.Sprintf("• `%s` — %s", esc(u.InstanceID), what))
	}
	return ":warning: GeminiDB's batch answer named instances this request did not send; check them in the console:\n" + strings.Join(lines, "\n")
}

// statusOfInstance answers "status <instance>" (an instance name or ID of
// target tg, not a job of this bot's requests): which request patches it,
// if any.
func (b *Bot) statusOfInstance(ctx context.Context, rid string, tg *target, ref string, reply func(string, []slack.Block)) {
	res, err := tg.DB.Resolve(ctx, []string{ref})
	if err != nil {
		reply("I could not look the instance up.\n"+b.userError(err, rid), nil)
		return
	}
	in, found := res.Found[ref]
	if !found {
		reply(fmt.Sprintf("No request or job `%s` is known here (status shows the requests and jobs of this channel) nor any instance of that name in GeminiDB project %s.", esc(ref), esc(tg.ProjectID)), nil)
		return
	}
	text, locked := b.lockedInstance(ctx, tg.Name, in.ID)
	if !locked {
		text = fmt.Sprintf("Instance `%s` (`%s`) is not being patched by any request of this bot.", esc(in.Name), esc(in.ID))
	}
	b.metrics.Commands.WithLabelValues("status").Inc()
	reply(text, nil)
}
