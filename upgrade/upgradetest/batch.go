package upgradetest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// SetUpgradeResult makes the next batch call that includes instanceID answer
// errorCode and errorMessage for it instead of starting a job.
func (s *Server) SetUpgradeResult(instanceID, errorCode, errorMessage string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.results[instanceID] = [2]string{errorCode, errorMessage}
}

// BatchCalls returns the instance_ids of every batch call that reached the
// batch handler (credentials accepted, no injected failure), in order.
func (s *Server) BatchCalls() [][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([][]string, len(s.batchCalls))
	for i, c := range s.batchCalls {
		out[i] = slices.Clone(c)
	}
	return out
}

func (s *Server) batch(w http.ResponseWriter, body []byte) {
	var req struct {
		InstanceIDs []string `json:"instance_ids"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, "DBS.280001", "Invalid parameter: the request body is not valid JSON.")
		return
	}
	if len(req.InstanceIDs) == 0 {
		writeError(w, http.StatusBadRequest, "DBS.280001", "Invalid parameter: instance_ids is required.")
		return
	}
	if len(req.InstanceIDs) > upgrade.MaxBatch {
		writeError(w, http.StatusBadRequest, "DBS.280001", fmt.Sprintf("Invalid parameter: at most %d instance IDs are allowed.", upgrade.MaxBatch))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.batchCalls = append(s.batchCalls, slices.Clone(req.InstanceIDs))
	engine := ""
	for _, id := range req.InstanceIDs {
		in := s.find(id)
		if in == nil {
			continue
		}
		if !slices.Contains(s.batchEngines, in.Engine) {
			writeError(w, http.StatusBadRequest, "DBS.280001", fmt.Sprintf("Invalid parameter: the engine %s does not support batch patching.", in.Engine))
			return
		}
		if engine != "" && in.Engine != engine {
			writeError(w, http.StatusBadRequest, "DBS.280001", "Invalid parameter: the instances must be of the same engine type.")
			return
		}
		engine = in.Engine
	}
	results := []upgrade.UpgradeResult{}
	for _, id := range req.InstanceIDs {
		res := upgrade.UpgradeResult{InstanceID: id}
		in := s.find(id)
		if e, ok := s.results[id]; ok {
			delete(s.results, id)
			res.ErrorCode, res.ErrorMessage = e[0], e[1]
		} else if in == nil {
			res.ErrorCode, res.ErrorMessage = "DBS.200002", "The DB instance does not exist."
		} else if in.Status != "normal" || len(in.Actions) > 0 {
			res.ErrorCode, res.ErrorMessage = "DBS.200011", "The status of DB instance does not allow the operation."
		} else if !in.PatchAvailable {
			res.ErrorCode, res.ErrorMessage = "DBS.280001", "No patch is available for the DB instance."
		} else {
			res.JobID = s.startJobLocked(in.ID)
		}
		results = append(results, res)
	}
	if fn := s.rewrite; fn != nil {
		s.rewrite = nil
		results = fn(results, s.startJobLocked)
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"upgrade_results": results})
}

// startJobLocked starts a running patch job for the instance with this ID
// (which may not exist) and returns the job's ID.
func (s *Server) startJobLocked(instanceID string) string {
	j := &fakeJob{id: s.nextJobID(), name: "UpgradeDbVersion", status: upgrade.JobRunning, progress: "0%", start: s.now(), instanceID: instanceID}
	if o, ok := s.outcomes[instanceID]; ok {
		j.outcome = &o
	}
	s.jobs[j.id] = j
	s.jobOrder = append(s.jobOrder, j.id)
	if in := s.find(instanceID); in != nil {
		j.instanceName = in.Name
		if !slices.Contains(in.Actions, upgradeAction) {
			in.Actions = append(in.Actions, upgradeAction)
		}
	}
	return j.id
}

// BatchRewrite changes the rows of one batch answer (see RewriteNextBatch).
// rows are the rows the fake would answer, one per instance sent, in the
// order sent. startJob starts a running patch job for an instance, without
// any check, and returns its ID, so that a row can name a job that exists.
type BatchRewrite func(rows []upgrade.UpgradeResult, startJob func(instanceID string) string) []upgrade.UpgradeResult

// RewriteNextBatch makes the next batch call that reaches the batch handler
// (credentials accepted, request valid) answer 202 with the rows fn returns
// instead, as the real API has been seen to: a duplicated row for one
// instance ([{X, job-1}, {X, DBS.200011 …}]), two jobs for one instance, a
// row for an instance that was not sent, a missing row. The jobs already
// started for the original rows keep running. fn runs with the fake's lock
// held and must not call the Server.
func (s *Server) RewriteNextBatch(fn BatchRewrite) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rewrite = fn
}
