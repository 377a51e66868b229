package upgrade

import "slices"

// BatchAnswer is a 202 answer of the batch call reconciled with the
// instance IDs that were sent (see Reconcile).
type BatchAnswer struct {
	// Results holds one result per instance sent, in the order sent. When
	// any row for an instance has a job_id, the first such row is its
	// result, whatever other rows say (a job was started: follow it). Else
	// its first row with an error code, else its first row.
	// An instance in Missing has a result with neither a JobID nor an
	// ErrorCode: its outcome is unknown.
	Results []UpgradeResult
	// ExtraJobs holds each further, different job ID answered for an
	// instance that was sent (its first job is in Results): every one of them
	// was started and must be followed. One entry per job, in answer order.
	ExtraJobs []UpgradeResult
	// Missing lists the instances sent whose outcome the answer does not
	// give (no row for them, or only rows with neither a job_id nor an
	// error_code): the patch may have started. In the order sent.
	Missing []string
	// Unexpected holds the rows for instances that were not sent (or that
	// name no instance), verbatim, in answer order: log them as errors and
	// name them to the people concerned. A job ID in one of them was started
	// by the call too.
	Unexpected []UpgradeResult
}

// JobIDs returns every job ID of instances that were sent: those of
// Results, then those of ExtraJobs.
func (a BatchAnswer) JobIDs() []string {
	var out []string
	for _, r := range a.Results {
		if r.JobID != "" {
			out = append(out, r.JobID)
		}
	}
	for _, r := range a.ExtraJobs {
		out = append(out, r.JobID)
	}
	return out
}

// Reconcile matches the rows of a batch answer (as BatchUpgrade returns
// them) to the instance IDs that were sent. The API promises one row per
// instance, but a row may be duplicated with another answer
// ([{X, job-1}, {X, DBS.200011 …}]), name an instance that was not sent, or
// be missing; Reconcile never loses a job ID to any of these (see
// BatchAnswer). It is pure: rows and sent are not modified.
func Reconcile(sent []string, rows []UpgradeResult) BatchAnswer {
	byID := make(map[string][]UpgradeResult, len(sent))
	wanted := make(map[string]bool, len(sent))
	for _, id := range sent {
		wanted[id] = true
	}
	var a BatchAnswer
	for _, r := range rows {
		if r.InstanceID == "" || !wanted[r.InstanceID] {
			a.Unexpected = append(a.Unexpected, r)
			continue
		}
		byID[r.InstanceID] = append(byID[r.InstanceID], r)
	}
	a.Results = make([]UpgradeResult, 0, len(sent))
	done := make(map[string]bool, len(sent))
	for _, id := range sent {
		if done[id] {
			continue // sent twice: BatchUpgrade refuses that, Reconcile tolerates it
		}
		done[id] = true
		rs := byID[id]
		if len(rs) == 0 {
			a.Missing = append(a.Missing, id)
			a.Results = append(a.Results, UpgradeResult{InstanceID: id})
			continue
		}
		r := pick(rs)
		if r.JobID == "" && r.ErrorCode == "" {
			a.Missing = append(a.Missing, id)
			r = UpgradeResult{InstanceID: id}
		}
		a.Results = append(a.Results, r)
		var jobs []string
		for _, r := range rs {
			if r.JobID == "" || slices.Contains(jobs, r.JobID) {
				continue
			}
			if len(jobs) > 0 {
				a.ExtraJobs = append(a.ExtraJobs, UpgradeResult{InstanceID: id, JobID: r.JobID})
			}
			jobs = append(jobs, r.JobID)
		}
	}
	return a
}

// pick chooses the result of one instance among its rows: the first with a
// job ID, else the first with an error code, else the first.
func pick(rs []UpgradeResult) UpgradeResult {
	if i := slices.IndexFunc(rs, func(r UpgradeResult) bool { return r.JobID != "" }); i >= 0 {
		r := rs[i]
		// A job was started: the row's error, if it has one, does not
		// make it a refusal.
		r.ErrorCode, r.ErrorMessage = "", ""
		return r
	}
	if i := slices.IndexFunc(rs, func(r UpgradeResult) bool { return r.ErrorCode != "" }); i >= 0 {
		return rs[i]
	}
	return rs[0]
}
