package upgrade

import "time"

// Resolution is the outcome of looking instance references (IDs or exact
// names) up in the project.
type Resolution struct {
	Found     map[string]Instance `json:"found"`     // reference → instance
	Missing   []string            `json:"missing"`   // references that matched nothing
	Ambiguous map[string][]string `json:"ambiguous"` // name → IDs of every instance with that name
}

// PlanItem is an instance the plan will patch (a row of Plan.Targets). Warning is set when it is
// included despite a caution (e.g. outside its maintenance window with --force).
type PlanItem struct {
	Ref      string   `json:"ref"`
	Instance Instance `json:"instance"`
	Warning  string   `json:"warning,omitempty"`
}

// Skip is an instance reference the plan will not patch, and why.
type Skip struct {
	Ref      string    `json:"ref"`
	Instance *Instance `json:"instance,omitempty"` // nil when the reference matched no (single) instance
	Reason   string    `json:"reason"`
	// OutsideWindow marks an instance skipped only because it is outside
	// its maintenance window: --force would include it.
	OutsideWindow bool `json:"outside_window,omitempty"`
}

// Batch is one call of the batch API: at most MaxBatch IDs of one engine.
type Batch struct {
	Engine      string   `json:"engine"`
	InstanceIDs []string `json:"instance_ids"`
}

// Plan is what a patch request will do, fixed when it is shown to a person:
// the instances to patch, grouped into batches, and those skipped with a reason.
type Plan struct {
	Refs      []string   `json:"refs"`
	Targets   []PlanItem `json:"targets"`
	Skipped   []Skip     `json:"skipped"`
	Batches   []Batch    `json:"batches"`
	Force     bool       `json:"force,omitempty"`
	CheckedAt time.Time  `json:"checked_at"`
}

// PlanOptions tunes how a plan is built.
type PlanOptions struct {
	BatchEngines []string  // engines the batch API accepts, e.g. cassandra, influxdb
	Force        bool      // include instances outside their maintenance window, with a warning
	Now          time.Time // the time maintenance windows are checked against
}
