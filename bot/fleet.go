package bot

import (
	"context"
	"fmt"
	"slices"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/commands"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// Defaults of the fleet limits (BOT_MAX_INSTANCES, BOT_FLEET_GUARD).
const (
	DefaultMaxInstances = 200
	DefaultFleetGuard   = 10
)

// Fleet is what a plan made from selectors shows besides the plan: which
// selectors were given and how many instances they matched. The plan's
// Targets are those to patch and its Skipped those blocked; instances the
// selectors matched that have no patch available are only counted.
type Fleet struct {
	Selectors string // as typed, canonical: "engine:cassandra name:orders-*"
	Matched   int    // instances the selectors matched
	UpToDate  int    // of those, without a patch available (left out of the plan)
}

// upgradeSelector converts the parsed selectors into the client's.
func upgradeSelector(s commands.Selectors) upgrade.Selector {
	sel := upgrade.Selector{All: s.All, Engines: slices.Clone(s.Engines), Names: slices.Clone(s.Names)}
	for _, t := range s.Tags {
		sel.Tags = append(sel.Tags, upgrade.Tag{Key: t.Key, Value: t.Value})
	}
	return sel
}

// TooManyError refuses a request that would plan more instances than
// BOT_MAX_INSTANCES; nothing was done.
type TooManyError struct {
	Selectors string // the selectors given, "" when none
	Selected  int    // instances the selectors picked that have a patch available
	Named     int    // instances named in the request
	Max       int    // BOT_MAX_INSTANCES
}

// Error says how many instances the request picked, the limit and how to
// narrow the request, for Slack.
func (e *TooManyError) Error() string {
	what := fmt.Sprintf("`%s` picks %s with a patch available", esc(e.Selectors), plural(e.Selected, "instance"))
	switch {
	case e.Selectors == "":
		what = fmt.Sprintf("You named %s", plural(e.Named, "instance"))
	case e.Named > 0:
		what += fmt.Sprintf(" (plus %d named)", e.Named)
	}
	how := "Narrow it: add `engine:…`, `name:GLOB` or `tag:KEY=VALUE` (kinds AND together), or split it into several requests."
	if e.Selectors == "" {
		how = "Split it into several requests."
	}
	return fmt.Sprintf("%s, but one request may plan at most %d (BOT_MAX_INSTANCES); nothing was done. %s", what, e.Max, how)
}

// fleetPlan builds the plan of a request with selectors: the target's
// instances the selectors match that have a patch available, plus the
// named instances, checked as upgrade.NewPlan checks named ones. The
// selection is one listing (and a tag query for tag:); the named
// instances are resolved as usual. More than max instances to plan is a
// *TooManyError.
func fleetPlan(ctx context.Context, db GeminiDB, req commands.Request, max int, opts upgrade.PlanOptions) (upgrade.Plan, Fleet, error) {
	f := Fleet{Selectors: req.Selectors.String()}
	matched, err := db.SelectInstances(ctx, upgradeSelector(req.Selectors))
	if err != nil {
		return upgrade.Plan{}, f, fmt.Errorf("select %s: %w", f.Selectors, err)
	}
	f.Matched = len(matched)
	var picked []upgrade.Instance
	for _, in := range matched {
		if in.PatchAvailable {
			picked = append(picked, in)
		} else {
			f.UpToDate++
		}
	}
	if n := len(picked) + len(req.Instances); n > max {
		return upgrade.Plan{}, f, &TooManyError{Selectors: f.Selectors, Selected: len(picked), Named: len(req.Instances), Max: max}
	}
	res := upgrade.Resolution{Found: map[string]upgrade.Instance{}, Ambiguous: map[string][]string{}}
	if len(req.Instances) > 0 {
		if res, err = db.Resolve(ctx, req.Instances); err != nil {
			return upgrade.Plan{}, f, fmt.Errorf("plan: %w", err)
		}
		if res.Found == nil {
			res.Found = map[string]upgrade.Instance{}
		}
	}
	// Named instances first, in the order given, then the selected ones;
	// an instance both named and selected is planned once (NewPlan).
	refs := slices.Clone(req.Instances)
	for _, in := range picked {
		if _, named := res.Found[in.ID]; !named {
			res.Found[in.ID] = in
		}
		if !slices.Contains(refs, in.ID) {
			refs = append(refs, in.ID)
		}
	}
	return upgrade.NewPlan(refs, res, opts), f, nil
}
