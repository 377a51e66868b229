package patch

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// Instance locks: one instance, one patch at a time. The swap that claims
// a wave (Confirm, Approve, SendWave) also takes, for the request, the lock
// of each instance of that wave (store.LockKey(target, instance ID)); an
// instance whose lock another request holds is not taken and never sent
// (Send.Locked). A lock is released as soon as its instance's outcome is
// known and nothing runs on it: refused by the cloud or not sent at once,
// its job's end when the job is followed (settleLocks). An unknown outcome
// keeps its lock until the instance list shows no upgrade in progress on
// two polls in a row, or until a person retries the finished request.

// LockKeys returns the lock keys of instance IDs of target.
func LockKeys(target string, ids []string) []string {
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = store.LockKey(target, id)
	}
	return keys
}

// rolloutIDs lists every instance of r's rollout.
func rolloutIDs(r store.Request) []string {
	ro, err := RolloutOf(r)
	if err != nil {
		return nil
	}
	var ids []string
	for _, w := range ro.Waves {
		ids = append(ids, w.InstanceIDs()...)
	}
	return ids
}

// claimMove is move to submitting for a verb that claims a wave (start,
// SendWave): in the same swap (store.TransitionLock) it takes the locks
// of the instances of the wave m picks in s.Wave, except those another
// request holds, which it names in s.Locked. The write is durable
// (store.WithDurable): a failover must not lose a claim whose batch went.
func (l *Lifecycle) claimMove(ctx context.Context, verb, id string, from []store.State, user string, s *Send, m mutation) (store.Request, error) {
	for _, f := range from {
		if !Allowed(f, store.Submitting) {
			return store.Request{}, &IllegalMoveError{ID: id, From: from, To: store.Submitting}
		}
	}
	// The instances of a rollout never change after Create: the keys to
	// read inside the swap are known from a read before it.
	pre, err := l.st.Get(ctx, id)
	if err != nil {
		return store.Request{}, fmt.Errorf("%s request %s: %w", verb, id, err)
	}
	keys := LockKeys(pre.Target, rolloutIDs(pre))
	r, err := l.st.TransitionLock(store.WithDurable(ctx), id, from, store.Submitting, user, keys, func(x *store.Request, held map[string]string) ([]string, error) {
		s.Locked = nil
		if err := l.apply(x, m); err != nil {
			return nil, err
		}
		ro, err := RolloutOf(*x)
		if err != nil || s.Wave < 0 || s.Wave >= len(ro.Waves) {
			return nil, err
		}
		var take []string
		for _, iid := range ro.Waves[s.Wave].InstanceIDs() {
			k := store.LockKey(x.Target, iid)
			if h, ok := held[k]; ok {
				if s.Locked == nil {
					s.Locked = map[string]string{}
				}
				s.Locked[iid] = h
				continue
			}
			take = append(take, k)
		}
		return take, nil
	})
	if err != nil {
		return store.Request{}, fmt.Errorf("%s request %s: %w", verb, id, err)
	}
	return r, nil
}

// withoutLocked drops the instances locked by other requests from
// batches (and the batches left empty).
func withoutLocked(batches []upgrade.Batch, locked map[string]string) []upgrade.Batch {
	if len(locked) == 0 {
		return batches
	}
	var out []upgrade.Batch
	for _, b := range batches {
		b.InstanceIDs = slices.DeleteFunc(slices.Clone(b.InstanceIDs), func(id string) bool { _, ok := locked[id]; return ok })
		if len(b.InstanceIDs) > 0 {
			out = append(out, b)
		}
	}
	return out
}

// HolderText says who holds an instance's lock: "being patched by r-… of
// @U…" (plain text: the engine knows no Slack markup; the requester is
// left out when the holder cannot be read).
func HolderText(ctx context.Context, st interface {
	Get(ctx context.Context, id string) (store.Request, error)
}, holder string) string {
	if h, err := st.Get(ctx, holder); err == nil && h.Requester != "" {
		return fmt.Sprintf("being patched by %s of @%s", holder, h.Requester)
	}
	return "being patched by " + holder
}

// lockedAnswers answers the instances of locked as not sent, naming who
// patches them.
func (rn *Runner) lockedAnswers(ctx context.Context, locked map[string]string) []upgrade.UpgradeResult {
	var out []upgrade.UpgradeResult
	for id, holder := range locked {
		out = append(out, upgrade.UpgradeResult{InstanceID: id, ErrorCode: CodeNotSent,
			ErrorMessage: "Skipped: it is " + HolderText(ctx, rn.st, holder) + ", so this request did not send it; nothing was started for it by this request."})
	}
	slices.SortFunc(out, func(a, b upgrade.UpgradeResult) int {
		if a.InstanceID < b.InstanceID {
			return -1
		}
		if a.InstanceID > b.InstanceID {
			return 1
		}
		return 0
	})
	return out
}

// releaseAnswered releases the locks of the instances answers say nothing
// runs on (refused by the cloud, not sent); a job or an unknown outcome
// keeps its lock.
func (rn *Runner) releaseAnswered(ctx context.Context, r store.Request, answers []upgrade.UpgradeResult) {
	var ids []string
	for _, a := range answers {
		if !a.Submitted() && !UnknownOutcome(a) {
			ids = append(ids, a.InstanceID)
		}
	}
	if len(ids) == 0 {
		return
	}
	if err := rn.st.Unlock(ctx, r.ID, LockKeys(r.Target, ids)); err != nil {
		// Safe: settleLocks releases them on a later tick.
		rn.log.Warn().Err(err).Str("request_id", r.ID).Msg("release instance locks")
	}
}

// settleLocks releases the locks request r holds that nothing needs any
// more: instances answered as refused or not sent, instances whose job
// ended; once r is final, every lock but those of unknown outcomes. An
// unknown outcome's lock is released when the instance list shows no
// upgrade in progress on two polls in a row (quietPolls).
func (rn *Runner) settleLocks(ctx context.Context, r store.Request, jobs []store.Job) {
	keys, err := rn.st.Locks(ctx, r.ID)
	if err != nil || len(keys) == 0 {
		return
	}
	_, results, err := PlanOf(r)
	if err != nil {
		return
	}
	answer := map[string]upgrade.UpgradeResult{}
	for _, a := range results {
		answer[a.InstanceID] = a
	}
	active := map[string]bool{}
	for _, j := range jobs {
		if j.Active() {
			active[j.InstanceID] = true
		}
	}
	var release, unknown []string
	for _, id := range rolloutIDs(r) {
		a, ok := answer[id]
		switch {
		case !ok || slices.Contains(r.InFlight, id) || active[id]:
			// Not answered yet (a wave being sent) or still running.
		case UnknownOutcome(a) || (a.Submitted() && !hasJob(jobs, a.JobID)):
			unknown = append(unknown, id)
		default:
			release = append(release, id)
		}
	}
	release = append(release, rn.quietPolls(ctx, r, unknown)...)
	if len(release) == 0 {
		return
	}
	if err := rn.st.Unlock(ctx, r.ID, LockKeys(r.Target, release)); err != nil {
		rn.log.Warn().Err(err).Str("request_id", r.ID).Msg("release instance locks")
	}
}

// hasJob tells whether jobs has the job id.
func hasJob(jobs []store.Job, id string) bool {
	return slices.ContainsFunc(jobs, func(j store.Job) bool { return j.ID == id })
}

// quietPolls looks the instances of r whose outcome is unknown up (at most
// once per poll interval) and returns those that showed no upgrade in
// progress on two polls in a row: their locks may go.
func (rn *Runner) quietPolls(ctx context.Context, r store.Request, ids []string) []string {
	if len(ids) == 0 {
		return nil
	}
	ro, err := RolloutOf(r)
	if err != nil || (!ro.QuietAt.IsZero() && rn.opts.Now().Sub(ro.QuietAt) < rn.opts.PollInterval) {
		return nil
	}
	site, ok := rn.opts.Fleet.SiteOf(r)
	if !ok || site.Cloud == nil {
		return nil
	}
	res, err := site.Cloud.Resolve(ctx, ids)
	if err != nil {
		rn.log.Warn().Err(err).Str("request_id", r.ID).Msg("look up instances of unknown outcome")
		return nil
	}
	var release []string
	_, err = rn.life.update(ctx, "count quiet polls of", r.ID, func(_ *store.Request, ro *Rollout, now time.Time) error {
		release = nil
		if ro.Quiet == nil {
			ro.Quiet = map[string]int{}
		}
		for _, id := range ids {
			if in, found := res.Found[id]; found && in.Upgrading() {
				delete(ro.Quiet, id)
				continue
			}
			ro.Quiet[id]++
			if ro.Quiet[id] >= 2 {
				release = append(release, id)
				delete(ro.Quiet, id)
			}
		}
		ro.QuietAt = now
		return nil
	})
	if err != nil {
		rn.log.Warn().Err(err).Str("request_id", r.ID).Msg("count quiet polls")
		return nil
	}
	return release
}

// settleFinal releases what a stopped, finished request still holds
// (settleLocks), reading its jobs only when it holds a lock.
func (rn *Runner) settleFinal(ctx context.Context, r store.Request) {
	if keys, err := rn.st.Locks(ctx, r.ID); err != nil || len(keys) == 0 {
		return
	}
	jobs, err := rn.st.Jobs(ctx, r.ID)
	if err != nil {
		return
	}
	rn.settleLocks(ctx, r, jobs)
}
