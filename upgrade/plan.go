package upgrade

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// DefaultBatchEngines returns the engines the batch patch API accepts on
// Open Telekom Cloud; NewPlan uses them when PlanOptions.BatchEngines is empty.
func DefaultBatchEngines() []string { return []string{"cassandra", "influxdb"} }

// Plan resolves refs and builds the plan for them: the preflight done before
// a person confirms a patch. See Resolve and NewPlan.
// References are trimmed and deduplicated first.
func (c *Client) Plan(ctx context.Context, refs []string, opts PlanOptions) (Plan, error) {
	refs = dedupe(refs)
	res, err := c.Resolve(ctx, refs)
	if err != nil {
		return Plan{}, fmt.Errorf("plan: %w", err)
	}
	return NewPlan(refs, res, opts), nil
}

// NewPlan decides, without I/O, which referenced instances will be patched
// and which are skipped and why, and groups the targets into batches of at
// most MaxBatch IDs of one engine (engines in order of first appearance).
// An instance reached by two references is patched once. Instances outside
// their maintenance window are skipped unless opts.Force, in which case they
// are targets with a warning. opts.Now must be set by the caller.
func NewPlan(refs []string, res Resolution, opts PlanOptions) Plan {
	engines := opts.BatchEngines
	if len(engines) == 0 {
		engines = DefaultBatchEngines()
	}
	p := Plan{Refs: slices.Clone(refs), Targets: []PlanItem{}, Skipped: []Skip{}, Batches: []Batch{}, Force: opts.Force, CheckedAt: opts.Now}
	seen := map[string]bool{}
	for _, ref := range refs {
		if ids, ok := res.Ambiguous[ref]; ok {
			p.Skipped = append(p.Skipped, Skip{Ref: ref, Reason: fmt.Sprintf("name %s matches %d instances: %s; use the ID", ref, len(ids), strings.Join(ids, ", "))})
			continue
		}
		in, ok := res.Found[ref]
		if !ok {
			p.Skipped = append(p.Skipped, Skip{Ref: ref, Reason: "not found in project"})
			continue
		}
		if seen[in.ID] {
			continue
		}
		seen[in.ID] = true
		skip := func(reason string) {
			inst := in
			p.Skipped = append(p.Skipped, Skip{Ref: ref, Instance: &inst, Reason: reason})
		}
		if reason := blocker(in, engines); reason != "" {
			skip(reason)
			continue
		}
		t := PlanItem{Ref: ref, Instance: in}
		if w := strings.TrimSpace(in.MaintenanceWindow); w != "" {
			inWin, err := InWindow(w, opts.Now)
			if err == nil && !inWin {
				if !opts.Force {
					inst := in
					p.Skipped = append(p.Skipped, Skip{Ref: ref, Instance: &inst, OutsideWindow: true,
						Reason: fmt.Sprintf("outside its maintenance window %s UTC (now %s UTC); add --force to patch anyway", w, opts.Now.UTC().Format("15:04"))})
					continue
				}
				t.Warning = fmt.Sprintf("outside its maintenance window %s UTC", w)
			}
		}
		p.Targets = append(p.Targets, t)
	}
	p.Batches = batches(p.Targets)
	return p
}

// blocker returns why in cannot be patched now, or "".
func blocker(in Instance, engines []string) string {
	if !slices.ContainsFunc(engines, func(e string) bool { return strings.EqualFold(e, in.Engine) }) {
		return fmt.Sprintf("engine %s is not supported by the batch patch API (supported: %s)", orUnknown(in.Engine), strings.Join(engines, ", "))
	}
	if !in.PatchAvailable {
		return fmt.Sprintf("no patch available (version %s)", orUnknown(in.Version))
	}
	if in.Status != "normal" {
		return fmt.Sprintf("instance status is %s, not normal", orUnknown(in.Status))
	}
	for _, n := range in.Nodes {
		if n.Status != "normal" {
			return fmt.Sprintf("node %s is %s, not normal", nodeName(n), orUnknown(n.Status))
		}
	}
	if len(in.Actions) > 0 {
		return "operation in progress: " + strings.Join(in.Actions, ", ")
	}
	return ""
}

func nodeName(n Node) string {
	switch {
	case n.Name != "" && n.ID != "":
		return n.Name + " (" + n.ID + ")"
	case n.Name != "":
		return n.Name
	default:
		return orUnknown(n.ID)
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// batches groups targets by engine, in order of first appearance, in chunks of MaxBatch.
func batches(targets []PlanItem) []Batch {
	var order []string
	byEngine := map[string][]string{}
	for _, t := range targets {
		e := strings.ToLower(t.Instance.Engine)
		if _, ok := byEngine[e]; !ok {
			order = append(order, e)
		}
		byEngine[e] = append(byEngine[e], t.Instance.ID)
	}
	out := []Batch{}
	for _, e := range order {
		for ids := range slices.Chunk(byEngine[e], MaxBatch) {
			out = append(out, Batch{Engine: e, InstanceIDs: slices.Clone(ids)})
		}
	}
	return out
}

// Patchable reports whether the plan has anything to patch.
func (p Plan) Patchable() bool { return len(p.Targets) > 0 }

// Drift compares the plan's targets with their current state (by instance
// ID, e.g. from a fresh list at the moment of confirmation) and returns one
// sentence per target that changed, naming every field that differs from
// what the plan showed, from what to what: name, engine, status, version,
// whole version, patch availability, maintenance window, operations in
// progress and each node's status (nodes matched by ID, in any order; added
// and removed nodes count). An instance patched in the console meanwhile
// shows as a changed whole version even when a newer patch is still
// offered. An empty result means the plan still holds.
func (p Plan) Drift(current map[string]Instance) []string {
	var out []string
	for _, t := range p.Targets {
		was := t.Instance
		label := fmt.Sprintf("%s (%s)", orUnknown(was.Name), was.ID)
		now, ok := current[was.ID]
		if !ok {
			out = append(out, fmt.Sprintf("Instance %s no longer exists.", label))
			continue
		}
		if why := changes(was, now); len(why) > 0 {
			out = append(out, fmt.Sprintf("Instance %s changed since the plan was made: %s.", label, strings.Join(why, "; ")))
		}
	}
	return out
}

// changes lists how now differs from was in the fields a plan shows.
func changes(was, now Instance) []string {
	var why []string
	field := func(name, a, b string, blank func(string) string) {
		if a != b {
			why = append(why, fmt.Sprintf("%s changed from %s to %s", name, blank(a), blank(b)))
		}
	}
	field("name", was.Name, now.Name, orUnknown)
	field("engine", was.Engine, now.Engine, orUnknown)
	field("status", was.Status, now.Status, orUnknown)
	field("version", was.Version, now.Version, orUnknown)
	field("whole version", was.WholeVersion, now.WholeVersion, orUnknown)
	field("patch available", yesNo(was.PatchAvailable), yesNo(now.PatchAvailable), orUnknown)
	field("maintenance window", strings.TrimSpace(was.MaintenanceWindow), strings.TrimSpace(now.MaintenanceWindow), orNone)
	if !sameSet(was.Actions, now.Actions) {
		why = append(why, fmt.Sprintf("operations in progress changed from %s to %s", orNone(strings.Join(was.Actions, ", ")), orNone(strings.Join(now.Actions, ", "))))
	}
	return append(why, nodeChanges(was.Nodes, now.Nodes)...)
}

// nodeChanges compares nodes by ID (by name when a node has no ID): status
// changes and removals in the order of was, then additions in the order of now.
func nodeChanges(was, now []Node) []string {
	key := func(n Node) string {
		if n.ID != "" {
			return "id:" + n.ID
		}
		return "name:" + n.Name
	}
	cur := map[string]Node{}
	for _, n := range now {
		cur[key(n)] = n
	}
	var why []string
	old := map[string]bool{}
	for _, w := range was {
		old[key(w)] = true
		n, ok := cur[key(w)]
		switch {
		case !ok:
			why = append(why, fmt.Sprintf("node %s was removed (it was %s)", nodeName(w), orUnknown(w.Status)))
		case n.Status != w.Status:
			why = append(why, fmt.Sprintf("node %s status changed from %s to %s", nodeName(w), orUnknown(w.Status), orUnknown(n.Status)))
		}
	}
	for _, n := range now {
		if !old[key(n)] {
			old[key(n)] = true
			why = append(why, fmt.Sprintf("node %s was added (it is %s)", nodeName(n), orUnknown(n.Status)))
		}
	}
	return why
}

// sameSet reports whether a and b hold the same strings, in any order.
func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// DriftAt is Drift at the moment now, typically when a person confirms the
// plan: everything Drift reports, plus, unless the plan was forced, one
// sentence per target whose current maintenance window (as NewPlan judges
// it; empty or malformed windows are ignored) does not contain now. Targets
// missing from current are only reported by Drift.
func (p Plan) DriftAt(current map[string]Instance, now time.Time) []string {
	out := p.Drift(current)
	if p.Force {
		return out
	}
	for _, t := range p.Targets {
		in, ok := current[t.Instance.ID]
		if !ok {
			continue
		}
		w := strings.TrimSpace(in.MaintenanceWindow)
		if w == "" {
			continue
		}
		if inWin, err := InWindow(w, now); err == nil && !inWin {
			out = append(out, fmt.Sprintf("Instance %s (%s) is now outside its maintenance window %s UTC (now %s UTC); run the command again with --force to patch it anyway.",
				orUnknown(t.Instance.Name), t.Instance.ID, w, now.UTC().Format("15:04")))
		}
	}
	return out
}

// InWindow reports whether t falls in a maintenance window written
// "HH:MM-HH:MM" in UTC. The start is inclusive, the end exclusive; a window
// whose end is before its start crosses midnight ("22:00-02:00"); "24:00" is
// accepted as an end. A malformed or empty window is an error.
func InWindow(window string, t time.Time) (bool, error) {
	start, end, err := parseWindow(window)
	if err != nil {
		return false, err
	}
	u := t.UTC()
	s := u.Hour()*3600 + u.Minute()*60 + u.Second()
	if start < end {
		return s >= start && s < end, nil
	}
	return s >= start || s < end, nil
}

// parseWindow returns a window's start and end in seconds after midnight.
func parseWindow(window string) (start, end int, err error) {
	a, b, ok := strings.Cut(strings.TrimSpace(window), "-")
	if !ok {
		return 0, 0, fmt.Errorf("maintenance window %q: want HH:MM-HH:MM", window)
	}
	start, err = parseClock(a, false)
	if err != nil {
		return 0, 0, fmt.Errorf("maintenance window %q: start: %w", window, err)
	}
	end, err = parseClock(b, true)
	if err != nil {
		return 0, 0, fmt.Errorf("maintenance window %q: end: %w", window, err)
	}
	if start == end {
		return 0, 0, fmt.Errorf("maintenance window %q: start equals end", window)
	}
	return start, end, nil
}

func parseClock(s string, isEnd bool) (int, error) {
	s = strings.TrimSpace(s)
	hh, mm, ok := strings.Cut(s, ":")
	if !ok || len(hh) < 1 || len(hh) > 2 || len(mm) != 2 {
		return 0, fmt.Errorf("%q is not HH:MM", s)
	}
	h, err1 := strconv.Atoi(hh)
	m, err2 := strconv.Atoi(mm)
	if err1 != nil || err2 != nil || h < 0 || m < 0 || m > 59 || strings.ContainsAny(s, "+- ") {
		return 0, fmt.Errorf("%q is not HH:MM", s)
	}
	if h == 24 && m == 0 && isEnd {
		return 24 * 3600, nil
	}
	if h > 23 {
		return 0, fmt.Errorf("%q is not HH:MM", s)
	}
	return h*3600 + m*60, nil
}
