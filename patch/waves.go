package patch

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// The bounds and defaults of a rollout's options (DESIGN.md "Fleet guard
// rails").
const (
	// MaxCanary is the largest canary a request may ask for.
	MaxCanary = 10
	// MaxWaveSize is the largest wave a request may ask for; a wave larger
	// than upgrade.MaxBatch is sent as several batch calls.
	MaxWaveSize = 100
	// DefaultWaveSize is the wave size of a guarded rollout that did not
	// ask for one.
	DefaultWaveSize = 10
	// DefaultFleetGuard is how many instances a request may hold before a
	// canary and waves are automatic (BOT_FLEET_GUARD).
	DefaultFleetGuard = 10
)

// Options are how a request's instances go out, as the command asked.
type Options struct {
	// Canary is how many instances go first, alone (1 to MaxCanary); the
	// rest wait until every one of them Completed. 0 means no canary.
	Canary int `json:"canary,omitempty"`
	// WaitForWindow schedules instances outside their maintenance window
	// for its next opening instead of leaving them out, and holds every
	// wave of instances with a window to that window.
	WaitForWindow bool `json:"wait_for_window,omitempty"`
	// WaveSize splits the instances after the canary into waves of at most
	// this many (1 to MaxWaveSize), each sent once every job of the waves
	// before it ended; 0 sends them in one wave (per window) as soon as the
	// canary passed. A rollout with waves also keeps an error budget.
	WaveSize int `json:"wave_size,omitempty"`
	// MaxErrors is the error budget of a rollout with waves: how many of
	// its instances may fail or end unknown (see Budget) with the rollout
	// going on; one more pauses it.
	MaxErrors int `json:"max_errors,omitempty"`
}

// Validate reports options a request cannot have.
func (o Options) Validate() error {
	switch {
	case o.Canary < 0 || o.Canary > MaxCanary:
		return fmt.Errorf("canary %d: want 0 (none) to %d", o.Canary, MaxCanary)
	case o.WaveSize < 0 || o.WaveSize > MaxWaveSize:
		return fmt.Errorf("wave size %d: want 0 (one wave) to %d", o.WaveSize, MaxWaveSize)
	case o.MaxErrors < 0:
		return fmt.Errorf("max errors %d: want 0 or more", o.MaxErrors)
	}
	return nil
}

// Guarded returns o for a plan of n instances under the fleet guard (at
// most guard instances go without one; guard ≤ 0 means
// DefaultFleetGuard): above it, a canary of 1 unless o has a canary, and
// waves of DefaultWaveSize unless o has a wave size. An error budget asked
// for (MaxErrors) also gives waves, since only a rollout in waves keeps
// one.
func (o Options) Guarded(n, guard int) Options {
	if guard <= 0 {
		guard = DefaultFleetGuard
	}
	if n > guard {
		if o.Canary == 0 {
			o.Canary = 1
		}
		if o.WaveSize == 0 {
			o.WaveSize = DefaultWaveSize
		}
	}
	if o.MaxErrors > 0 && o.WaveSize == 0 {
		o.WaveSize = DefaultWaveSize
	}
	return o
}

// Kind says why a wave is a wave.
type Kind string

// The kinds of wave.
const (
	// KindCanary holds canary instances: sent first; every later wave waits
	// until each of them Completed, and one that did not pauses the request.
	KindCanary Kind = "canary"
	// KindRest holds instances sent as soon as they may be: at once, or
	// after the canary.
	KindRest Kind = "rest"
	// KindWindow holds instances scheduled for a maintenance window that
	// was closed when the plan was made.
	KindWindow Kind = "window"
)

// Wave is a group of instances sent together, in batches of at most
// upgrade.MaxBatch instances of one engine, and how far its sending got.
// A wave with a Window is only ever sent while that window is open.
type Wave struct {
	Kind    Kind            `json:"kind"`
	Batches []upgrade.Batch `json:"batches"`
	Window  Window          `json:"window,omitzero"`
	// Opens is when the wave could first go, as planned: the plan's time,
	// or the next opening of its window after it.
	Opens time.Time `json:"opens"`
	// Started is when its sending was claimed (zero: not yet); By who set
	// it going ("" for the bot on its own).
	Started time.Time `json:"started,omitzero"`
	By      string    `json:"by,omitempty"`
	// Ended is when every answer of its batches was recorded.
	Ended time.Time `json:"ended,omitzero"`
}

// InstanceIDs lists the wave's instances, batch by batch.
func (w Wave) InstanceIDs() []string {
	var ids []string
	for _, b := range w.Batches {
		ids = append(ids, b.InstanceIDs...)
	}
	return ids
}

// Mark records that something happened to a request: when, by whom ("" for
// the bot) and why.
type Mark struct {
	At        time.Time `json:"at"`
	By        string    `json:"by,omitempty"`
	Why       string    `json:"why,omitempty"`
	Instances []string  `json:"instances,omitempty"`
}

// Rollout is how a request's instances go out and how far that got; it is
// kept, as JSON, in store.Request.Rollout, and only this package writes it.
type Rollout struct {
	Options
	Waves []Wave `json:"waves"`
	// Paused is the last time a canary paused the request, and why.
	Paused *Mark `json:"paused,omitempty"`
	// Continued is set once someone continued past a pause: later waves no
	// longer wait for the canary.
	Continued *Mark `json:"continued,omitempty"`
	// Accepted are the instances whose failure a person accepted by
	// pressing Continue: they no longer count against the error budget,
	// which then applies to the errors after them.
	Accepted []string `json:"accepted,omitempty"`
	// Stopped is set once someone stopped the request: no wave is started
	// and no batch is sent after it.
	Stopped *Mark `json:"stopped,omitempty"`
	// Finished is set once the final summary is out.
	Finished *Mark `json:"finished,omitempty"`
	// Quiet counts, per instance whose outcome is unknown, the polls in a
	// row that showed no upgrade in progress on it, last at QuietAt (see
	// quietPolls in locks.go).
	Quiet   map[string]int `json:"quiet,omitempty"`
	QuietAt time.Time      `json:"quiet_at,omitzero"`
}

// Sending returns the index of the wave whose sending was claimed but has
// not ended, or -1.
func (ro Rollout) Sending() int {
	return slices.IndexFunc(ro.Waves, func(w Wave) bool { return !w.Started.IsZero() && w.Ended.IsZero() })
}

// Unsent lists the instances of the waves never started: after a Stop, the
// instances that were not sent.
func (ro Rollout) Unsent() []string {
	var ids []string
	for _, w := range ro.Waves {
		if w.Started.IsZero() {
			ids = append(ids, w.InstanceIDs()...)
		}
	}
	return ids
}

// waiting reports whether some wave was never started.
func (ro Rollout) waiting() bool {
	return slices.ContainsFunc(ro.Waves, func(w Wave) bool { return w.Started.IsZero() })
}

// NotPatched lists, in wave order, the instances of r that have no job
// that Completed: failed, given up, refused by the cloud, of unknown
// outcome, not sent, or never sent after a Stop. They are what Retry
// offers a fresh plan for (whose preflight leaves out any that did start).
func NotPatched(r store.Request, jobs []store.Job) ([]string, error) {
	ro, err := RolloutOf(r)
	if err != nil {
		return nil, err
	}
	completed := map[string]bool{}
	for _, j := range jobs {
		if j.Status == upgrade.JobCompleted {
			completed[j.InstanceID] = true
		}
	}
	var ids []string
	for _, w := range ro.Waves {
		for _, id := range w.InstanceIDs() {
			if !completed[id] {
				ids = append(ids, id)
			}
		}
	}
	return ids, nil
}

// hasCanary reports whether some wave is a canary wave.
func (ro Rollout) hasCanary() bool {
	return slices.ContainsFunc(ro.Waves, func(w Wave) bool { return w.Kind == KindCanary })
}

// unit is one instance on its way into a wave.
type unit struct {
	in     upgrade.Instance
	window Window
	opens  time.Time
}

// Waves splits a plan into the waves it is sent in, in order, judged at
// now (the plan's time). Without options it is one wave of the plan's
// batches. The instances to send are the plan's targets and, with
// WaitForWindow, the instances it left out only for being outside their
// maintenance window; with WaitForWindow (and a plan not forced) every
// instance with a window is held to it. They are ordered by when they may
// first go (at once, then by the next opening of their window, keeping the
// plan's order), the first opts.Canary of them are the canary, and each
// group (canary or not) is split by window into waves: the canary waves
// first, then the others, each by its opening. So the canary goes in the
// first window. With opts.WaveSize, each window's non-canary instances are
// further split, in order, into waves of at most WaveSize. Within a wave,
// instances are batched by engine (in order of first appearance) in chunks
// of upgrade.MaxBatch, as upgrade.Plan does. A malformed window counts as
// none, as in upgrade.NewPlan.
func Waves(p upgrade.Plan, opts Options, now time.Time) []Wave {
	hold := opts.WaitForWindow && !p.Force
	var units []unit
	add := func(in upgrade.Instance) {
		u := unit{in: in, opens: now}
		if hold {
			if w, err := ParseWindow(in.MaintenanceWindow); err == nil {
				u.window, u.opens = w, w.NextOpen(now)
			}
		}
		units = append(units, u)
	}
	for _, t := range p.Targets {
		add(t.Instance)
	}
	if hold {
		for _, s := range p.Skipped {
			if s.OutsideWindow && s.Instance != nil {
				add(*s.Instance)
			}
		}
	}
	slices.SortStableFunc(units, func(a, b unit) int { return a.opens.Compare(b.opens) })
	n := min(max(opts.Canary, 0), len(units))
	waves := group(units[:n], KindCanary, now, 0)
	return append(waves, group(units[n:], KindRest, now, opts.WaveSize)...)
}

// group splits units, ordered by opening, into one wave per window (of at
// most size units each, when size > 0), in order of opening; a non-canary
// wave whose window is closed at now is KindWindow.
func group(units []unit, kind Kind, now time.Time, size int) []Wave {
	var order []Window
	byWindow := map[Window][]unit{}
	for _, u := range units {
		if _, ok := byWindow[u.window]; !ok {
			order = append(order, u.window)
		}
		byWindow[u.window] = append(byWindow[u.window], u)
	}
	waves := make([]Wave, 0, len(order))
	for _, w := range order {
		all := byWindow[w]
		n := size
		if n <= 0 {
			n = len(all)
		}
		for us := range slices.Chunk(all, n) {
			wave := Wave{Kind: kind, Window: w, Opens: us[0].opens, Batches: batches(us)}
			if kind != KindCanary && wave.Opens.After(now) {
				wave.Kind = KindWindow
			}
			waves = append(waves, wave)
		}
	}
	slices.SortStableFunc(waves, func(a, b Wave) int { return a.Opens.Compare(b.Opens) })
	return waves
}

// batches groups units by engine, in order of first appearance, in chunks
// of upgrade.MaxBatch.
func batches(units []unit) []upgrade.Batch {
	var order []string
	byEngine := map[string][]string{}
	for _, u := range units {
		e := strings.ToLower(u.in.Engine)
		if _, ok := byEngine[e]; !ok {
			order = append(order, e)
		}
		byEngine[e] = append(byEngine[e], u.in.ID)
	}
	out := []upgrade.Batch{}
	for _, e := range order {
		for ids := range slices.Chunk(byEngine[e], upgrade.MaxBatch) {
			out = append(out, upgrade.Batch{Engine: e, InstanceIDs: slices.Clone(ids)})
		}
	}
	return out
}

// RolloutOf reads the rollout stored on r. A request written before
// rollouts existed has one wave of its plan's batches, sent when it was
// submitted.
func RolloutOf(r store.Request) (Rollout, error) {
	var ro Rollout
	if len(r.Rollout) > 0 {
		if err := json.Unmarshal(r.Rollout, &ro); err != nil {
			return Rollout{}, fmt.Errorf("decode rollout of request %s: %w", r.ID, err)
		}
		return ro, nil
	}
	var p upgrade.Plan
	if len(r.Plan) > 0 {
		if err := json.Unmarshal(r.Plan, &p); err != nil {
			return Rollout{}, fmt.Errorf("decode plan of request %s: %w", r.ID, err)
		}
	}
	w := Wave{Kind: KindRest, Batches: p.Batches, Opens: r.CreatedAt}
	switch r.State {
	case store.Planned, store.AwaitingApproval, store.Approved, store.Cancelled, store.Rejected, store.Expired:
	default:
		w.Started = r.UpdatedAt
		for _, e := range r.History {
			if e.To == store.Submitting {
				w.Started, w.By = e.At, e.User
				break
			}
		}
		if r.State != store.Submitting {
			w.Ended = r.UpdatedAt
		}
	}
	return Rollout{Waves: []Wave{w}}, nil
}

// setRollout stores ro on r.
func setRollout(r *store.Request, ro Rollout) error {
	raw, err := json.Marshal(ro)
	if err != nil {
		return fmt.Errorf("encode rollout of request %s: %w", r.ID, err)
	}
	r.Rollout = raw
	return nil
}

// Recheck looks again at the instances of wave w of plan p, right before
// it is sent, against current (their state now, by ID): it returns the
// batches to send, without the instances that no longer pass, and for each
// of those one sentence saying why (as upgrade.Plan.DriftAt says it: it
// changed since the plan was shown, it is gone, or, unless the plan was
// forced, it is outside its maintenance window at now).
func Recheck(p upgrade.Plan, w Wave, current map[string]upgrade.Instance, now time.Time) (send []upgrade.Batch, refused map[string]string) {
	planned := map[string]upgrade.Instance{}
	for _, t := range p.Targets {
		planned[t.Instance.ID] = t.Instance
	}
	for _, s := range p.Skipped {
		if s.Instance != nil {
			if _, ok := planned[s.Instance.ID]; !ok {
				planned[s.Instance.ID] = *s.Instance
			}
		}
	}
	refused = map[string]string{}
	for _, b := range w.Batches {
		var ids []string
		for _, id := range b.InstanceIDs {
			in, ok := planned[id]
			if !ok {
				in = upgrade.Instance{ID: id}
			}
			one := upgrade.Plan{Targets: []upgrade.PlanItem{{Instance: in}}, Force: p.Force}
			if why := one.DriftAt(current, now); len(why) > 0 {
				refused[id] = strings.Join(why, " ")
				continue
			}
			ids = append(ids, id)
		}
		if len(ids) > 0 {
			send = append(send, upgrade.Batch{Engine: b.Engine, InstanceIDs: ids})
		}
	}
	return send, refused
}
