package patch

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// Action is what is due for a request.
type Action string

// The actions Next may ask for.
const (
	// ActionNone: nothing, ever again (a final state, its summary out).
	ActionNone Action = "none"
	// ActionWait: nothing now; look again at Until (zero: when a job
	// ends or a person acts).
	ActionWait Action = "wait"
	// ActionExpire: the plan's time ran out; call Expire.
	ActionExpire Action = "expire"
	// ActionSend: wave Wave may go; call SendWave, and send it if won.
	ActionSend Action = "send"
	// ActionRecover: the process sending a wave stopped; call Recover.
	ActionRecover Action = "recover"
	// ActionPause: a canary went wrong; call Pause and offer Continue and
	// Stop.
	ActionPause Action = "pause"
	// ActionFinish: everything was sent and every job ended; post the
	// final summary (under the report claim), then call Finish.
	ActionFinish Action = "finish"
)

// Step is what is due for a request, and why.
type Step struct {
	Action Action
	Wave   int       // ActionSend: the wave to send
	Until  time.Time // ActionWait: when to look again, if known
	// Why says, in a sentence, why (for logs, status and the pause reply).
	Why string
	// Instances are, for ActionPause, the canary instances that went wrong.
	Instances []string
}

// Next says what is due for request r at now, given its jobs (read after
// r, so that every job recorded before r was is among them). It is pure:
// the verb it points to checks everything again in its own swap, so a
// stale answer costs at most a refused call.
func Next(r store.Request, jobs []store.Job, now time.Time) (Step, error) {
	ro, err := RolloutOf(r)
	if err != nil {
		return Step{}, err
	}
	switch r.State {
	case store.Planned, store.AwaitingApproval, store.Approved:
		if !r.ExpiresAt.IsZero() && !now.Before(r.ExpiresAt) {
			return Step{Action: ActionExpire, Why: "the plan expired"}, nil
		}
		return Step{Action: ActionWait, Until: r.ExpiresAt, Why: "waiting for a decision"}, nil
	case store.Submitting:
		end := leaseEnd(r)
		if !now.Before(end) {
			return Step{Action: ActionRecover, Why: "its sender stopped renewing its claim"}, nil
		}
		return Step{Action: ActionWait, Until: end, Why: "a wave is being sent"}, nil
	case store.Submitted:
		return nextSubmitted(r, ro, jobs, now), nil
	case store.Paused:
		why := "paused; waiting for Continue or Stop"
		if ro.Paused != nil {
			why = "paused (" + ro.Paused.Why + "); waiting for Continue or Stop"
		}
		return Step{Action: ActionWait, Why: why}, nil
	case store.Stopped:
		if ro.Finished == nil {
			return ending(r, jobs), nil
		}
	}
	return Step{Action: ActionNone}, nil
}

// nextSubmitted is Next for a submitted request.
func nextSubmitted(r store.Request, ro Rollout, jobs []store.Job, now time.Time) Step {
	if r.ResultsPending {
		return Step{Action: ActionWait, Why: "the batch answers are not all posted yet"}
	}
	if !ro.waiting() {
		return ending(r, jobs)
	}
	v := judge(ro, jobs)
	if pause, why, bad := v.pause(ro); pause {
		return Step{Action: ActionPause, Why: why, Instances: bad}
	}
	var until time.Time
	var why []string
	for k, w := range ro.Waves {
		if !w.Started.IsZero() {
			continue
		}
		ok, reason, at := due(ro, k, v, now)
		if ok {
			return Step{Action: ActionSend, Wave: k, Why: fmt.Sprintf("wave %d (%s) may go", k, w.Kind)}
		}
		why = append(why, fmt.Sprintf("wave %d %s", k, reason))
		if !at.IsZero() && (until.IsZero() || at.Before(until)) {
			until = at
		}
	}
	return Step{Action: ActionWait, Until: until, Why: strings.Join(why, "; ")}
}

// ending is Next for a request with nothing more to send.
func ending(r store.Request, jobs []store.Job) Step {
	switch {
	case r.State == store.Stopped && r.ResultsPending, r.State == store.Submitted && r.ResultsPending:
		return Step{Action: ActionWait, Why: "the batch answers are not all posted yet"}
	case !allEnded(jobs):
		return Step{Action: ActionWait, Why: "jobs are running"}
	}
	return Step{Action: ActionFinish, Why: "every job ended"}
}

// due reports whether wave k of ro may be started at now, given the
// canary's verdict v; if not, why, and when it may (zero: not known).
func due(ro Rollout, k int, v verdict, now time.Time) (ok bool, why string, until time.Time) {
	w := ro.Waves[k]
	if w.Kind != KindCanary && v.state != canaryPassed {
		return false, "waits for every canary instance to complete", time.Time{}
	}
	if v.over() {
		return false, "waits: " + v.budgetWhy(ro), time.Time{}
	}
	if ro.WaveSize > 0 && w.Kind != KindCanary {
		for j := range k {
			switch {
			case ro.Waves[j].Ended.IsZero():
				return false, fmt.Sprintf("waits for wave %d to be sent", j+1), time.Time{}
			case v.running[j]:
				return false, fmt.Sprintf("waits for every job of wave %d to end", j+1), time.Time{}
			}
		}
	}
	if !w.Window.Contains(now) {
		open := w.Window.NextOpen(now)
		return false, fmt.Sprintf("waits for its window %s UTC (opens %s)", w.Window, open.Format(time.RFC3339)), open
	}
	return true, "", time.Time{}
}

// canaryState is where a request's canary stands.
type canaryState int

const (
	canaryPassed  canaryState = iota // no canary, every canary Completed, or continued past it
	canaryPending                    // some canary not sent or still running, none went wrong
	canaryBad                        // some canary Failed, was given up, or never started
)

// verdict is the canary's state and, when bad, which instances and why;
// and, for a rollout in waves, its error budget and which of its sent
// waves still have jobs running.
type verdict struct {
	state canaryState
	bad   []string
	why   string

	// budgeted is set for a rollout in waves (Options.WaveSize > 0).
	budgeted bool
	// errors are the instances of sent waves counted against the budget
	// (not accepted by a Continue), in wave order; allowed is MaxErrors.
	errors  []string
	allowed int
	// running[k] is set when wave k was sent and some job of it is still
	// followed.
	running map[int]bool
}

// over reports whether the error budget is spent: more errors than allowed.
func (v verdict) over() bool { return v.budgeted && len(v.errors) > v.allowed }

// budgetWhy says why the budget stopped the rollout, for the pause.
func (v verdict) budgetWhy(ro Rollout) string {
	const most = 10
	names := v.errors
	more := ""
	if len(names) > most {
		names, more = names[:most], fmt.Sprintf(" and %d more", len(v.errors)-most)
	}
	accepted := ""
	if len(ro.Accepted) > 0 {
		accepted = fmt.Sprintf(" after the %d accepted by Continue", len(ro.Accepted))
	}
	return fmt.Sprintf("%d instances failed or ended unknown%s (%s%s), more than --max-errors %d allows",
		len(v.errors), accepted, strings.Join(names, ", "), more, v.allowed)
}

// pause reports whether the request must pause now, why, and the
// instances that made it: a canary that went wrong, or a spent budget.
func (v verdict) pause(ro Rollout) (bool, string, []string) {
	switch {
	case v.state == canaryBad:
		return true, v.why, v.bad
	case v.over():
		return true, v.budgetWhy(ro), v.errors
	}
	return false, "", nil
}

// Budget is the error budget of a rollout in waves: Used counts the
// instances of its sent waves that failed, were given up, were refused by
// the cloud, were not sent or ended unknown (any that started no job that
// Completed and has none running), less those a Continue accepted; once
// Used exceeds Allowed (MaxErrors) the rollout pauses. Budgeted is false
// for a rollout without waves, which keeps no budget.
type Budget struct {
	Budgeted      bool
	Used, Allowed int
	Accepted      int
}

// BudgetOf returns the error budget of r, given its jobs.
func BudgetOf(r store.Request, jobs []store.Job) (Budget, error) {
	ro, err := RolloutOf(r)
	if err != nil {
		return Budget{}, err
	}
	v := judge(ro, jobs)
	return Budget{Budgeted: v.budgeted, Used: len(v.errors), Allowed: v.allowed, Accepted: len(ro.Accepted)}, nil
}

// judge judges ro's canary and, for a rollout in waves, its error budget,
// from its jobs. Once continued, the canary passes; errors a Continue
// accepted are not counted again.
func judge(ro Rollout, jobs []store.Job) verdict {
	byInstance := map[string]store.Job{}
	for _, j := range jobs {
		if old, ok := byInstance[j.InstanceID]; !ok || j.SubmittedAt.After(old.SubmittedAt) {
			byInstance[j.InstanceID] = j
		}
	}
	v := judgeCanary(ro, byInstance)
	if ro.WaveSize <= 0 {
		return v
	}
	v.budgeted, v.allowed, v.running = true, ro.MaxErrors, map[int]bool{}
	for k, w := range ro.Waves {
		if w.Ended.IsZero() {
			continue
		}
		for _, id := range w.InstanceIDs() {
			j, ok := byInstance[id]
			switch {
			case ok && j.Active():
				v.running[k] = true
			case ok && j.Status == upgrade.JobCompleted:
			case !slices.Contains(ro.Accepted, id):
				v.errors = append(v.errors, id)
			}
		}
	}
	return v
}

// judgeCanary judges ro's canary from the latest job of each instance.
// Once continued, it passes.
func judgeCanary(ro Rollout, byInstance map[string]store.Job) verdict {
	if !ro.hasCanary() || ro.Continued != nil {
		return verdict{state: canaryPassed}
	}
	v := verdict{state: canaryPassed}
	var why []string
	for _, w := range ro.Waves {
		if w.Kind != KindCanary {
			continue
		}
		if w.Ended.IsZero() {
			v.state = max(v.state, canaryPending)
			continue
		}
		for _, id := range w.InstanceIDs() {
			j, ok := byInstance[id]
			reason := ""
			switch {
			case !ok:
				reason = id + " started no job (the batch call refused it, its outcome is unknown, or it was not sent)"
			case j.Status == upgrade.JobCompleted:
				continue
			case j.Status == upgrade.JobFailed:
				reason = id + " failed"
				if j.FailReason != "" {
					reason += ": " + j.FailReason
				}
			case j.GaveUp:
				reason = id + " is no longer followed (its job " + j.ID + " did not end in time)"
			default:
				v.state = max(v.state, canaryPending)
				continue
			}
			v.state = canaryBad
			v.bad = append(v.bad, id)
			why = append(why, reason)
		}
	}
	if v.state == canaryBad {
		v.why = "canary " + strings.Join(why, "; ")
	}
	return v
}

// wake makes x due at once: WakeAt now or, when it is already due, just
// before its WakeAt, so that the write always changes WakeAt and a Tick
// that read x before it never puts it back to sleep (sleep compares
// WakeAt).
//
// A request that is final and owes nothing (done, cancelled, rejected,
// expired; not stopped, whose locks go as its last jobs end) has nothing
// due ever again: a late write about it (a message's ts recorded) leaves
// it asleep, so that no tick rewrites it, which would move its UpdatedAt
// and with it the start of its retention.
func wake(x *store.Request, now time.Time) {
	if x.State.Final() && x.State != store.Stopped && !x.ResultsPending {
		x.WakeAt = time.Time{}
		return
	}
	if !x.WakeAt.IsZero() && !x.WakeAt.After(now) {
		x.WakeAt = x.WakeAt.Add(-time.Nanosecond)
		return
	}
	x.WakeAt = now
}
