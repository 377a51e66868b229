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
			j := &fakeJob{id: s.nextJobID(), name: "UpgradeDbVersion", status: upgrade.JobRunning, progress: "0%", start: s.now(), instanceID: in.ID, instanceName: in.Name}
			if o, ok := s.outcomes[in.ID]; ok {
				j.outcome = &o
			}
			s.jobs[j.id] = j
			s.jobOrder = append(s.jobOrder, j.id)
			in.Actions = append(in.Actions, upgradeAction)
			res.JobID = j.id
		}
		results = append(results, res)
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"upgrade_results": results})
}
