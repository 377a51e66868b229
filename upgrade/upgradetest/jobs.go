package upgradetest

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

type fakeJob struct {
	id, name, status, progress, failReason string
	start, end                             time.Time
	instanceID, instanceName               string
	outcome                                *JobOutcome // how it ends by itself; nil: driven by the caller
}

// JobOutcome is how the patch jobs the fake starts for an instance end by
// themselves (see SetJobOutcome).
type JobOutcome struct {
	// Duration is how long a job runs, on the fake's clock (WithClock).
	Duration time.Duration
	// NewVersion is the instance's whole version after a job that completed;
	// "" keeps its version (the patch is still no longer available).
	NewVersion string
	// FailReason, when set, makes the job fail with this reason instead;
	// the instance keeps its version and its patch.
	FailReason string
}

// SetJobOutcome makes every patch job started for instanceID from now on
// end by itself: Duration after the batch call, on the fake's clock, it is
// Completed (the instance then runs NewVersion and has no patch available)
// or, with a FailReason, Failed. While it runs its progress grows with the
// time passed. The job ends the moment anyone looks (an API call, Job,
// Instance) at or after its end, with exactly Duration between its start
// and end times. A zero Duration removes the outcome: jobs then run until
// the caller ends them (SetJob, CompleteJob, FailJob), as by default.
func (s *Server) SetJobOutcome(instanceID string, o JobOutcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o.Duration <= 0 {
		delete(s.outcomes, instanceID)
		return
	}
	s.outcomes[instanceID] = o
}

// settleLocked ends the jobs whose outcome is due on the fake's clock.
func (s *Server) settleLocked() {
	now := s.now()
	for _, id := range s.jobOrder {
		j := s.jobs[id]
		if j.outcome == nil || j.status != upgrade.JobRunning {
			continue
		}
		end := j.start.Add(j.outcome.Duration)
		if now.Before(end) {
			continue
		}
		j.progress, j.end = "", end
		if j.outcome.FailReason != "" {
			j.status, j.failReason = upgrade.JobFailed, j.outcome.FailReason
		} else {
			j.status, j.failReason = upgrade.JobCompleted, ""
			if in := s.find(j.instanceID); in != nil {
				if j.outcome.NewVersion != "" {
					in.Version, in.WholeVersion = majorMinor(j.outcome.NewVersion), j.outcome.NewVersion
				}
				in.PatchAvailable = false
			}
		}
		s.clearAction(j.instanceID)
	}
}

// majorMinor is the datastore version of a whole version: "3.11" of "3.11.3.5".
func majorMinor(whole string) string {
	parts := strings.SplitN(whole, ".", 3)
	if len(parts) < 2 {
		return whole
	}
	return parts[0] + "." + parts[1]
}

// progressLocked is a running job's progress: the share of its outcome's
// duration that has passed, or what the caller set.
func (s *Server) progressLocked(j *fakeJob) string {
	if j.outcome == nil || j.status != upgrade.JobRunning {
		return j.progress
	}
	done := s.now().Sub(j.start) * 100 / j.outcome.Duration
	return fmt.Sprintf("%d%%", min(max(done, 0), 99))
}

// SetJob sets a job's status, progress and fail reason; an unknown job ID
// creates a job (named UpgradeDbVersion, without instance).
func (s *Server) SetJob(jobID, status, progress, failReason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[jobID]
	if j == nil {
		j = &fakeJob{id: jobID, name: "UpgradeDbVersion", start: s.now()}
		s.jobs[jobID] = j
		s.jobOrder = append(s.jobOrder, jobID)
	}
	j.status, j.progress, j.failReason = status, progress, failReason
	if status == upgrade.JobCompleted || status == upgrade.JobFailed {
		if j.end.IsZero() {
			j.end = s.now()
		}
		s.clearAction(j.instanceID)
	} else {
		j.end = time.Time{}
	}
}

// CompleteJob finishes a job successfully: its instance now runs newVersion
// (when not empty) and has no patch available.
func (s *Server) CompleteJob(jobID, newVersion string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[jobID]
	if j == nil {
		s.errorf("upgradetest: CompleteJob: no job %s", jobID)
		return
	}
	j.status, j.progress, j.failReason, j.end = upgrade.JobCompleted, "", "", s.now()
	if in := s.find(j.instanceID); in != nil {
		if newVersion != "" {
			in.Version = newVersion
			in.WholeVersion = newVersion
		}
		in.PatchAvailable = false
	}
	s.clearAction(j.instanceID)
}

// FailJob finishes a job with a failure reason; the instance keeps its version.
func (s *Server) FailJob(jobID, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[jobID]
	if j == nil {
		s.errorf("upgradetest: FailJob: no job %s", jobID)
		return
	}
	j.status, j.progress, j.failReason, j.end = upgrade.JobFailed, "", reason, s.now()
	s.clearAction(j.instanceID)
}

// JobsFor returns the IDs of the jobs started for an instance, oldest first.
func (s *Server) JobsFor(instanceID string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, id := range s.jobOrder {
		if s.jobs[id].instanceID == instanceID {
			out = append(out, id)
		}
	}
	return out
}

// Job returns a job as the jobs API would report it.
func (s *Server) Job(jobID string) (upgrade.Job, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked()
	j := s.jobs[jobID]
	if j == nil {
		return upgrade.Job{}, false
	}
	return upgrade.Job{
		ID: j.id, Name: j.name, Status: j.status, Progress: s.progressLocked(j),
		Started: j.start, Ended: j.end, InstanceID: j.instanceID, InstanceName: j.instanceName, FailReason: j.failReason,
	}, true
}

func (s *Server) listJobs(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	s.mu.Lock()
	jobs := []map[string]any{}
	for _, jid := range s.jobOrder {
		if id != "" && jid != id {
			continue
		}
		j := s.jobs[jid]
		end := ""
		if !j.end.IsZero() {
			end = j.end.UTC().Format(JobTimeLayout)
		}
		jobs = append(jobs, map[string]any{
			"id":          j.id,
			"name":        j.name,
			"status":      j.status,
			"created":     j.start.UTC().Format(JobTimeLayout),
			"start_time":  j.start.UTC().Format(JobTimeLayout),
			"end_time":    end,
			"progress":    s.progressLocked(j),
			"instance":    map[string]any{"id": j.instanceID, "name": j.instanceName},
			"fail_reason": j.failReason,
		})
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"total_count": len(jobs), "jobs": jobs})
}
