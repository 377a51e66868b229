package upgradetest

import (
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// AddInstance adds inst to the project (replacing an instance with the same ID).
func (s *Server) AddInstance(inst upgrade.Instance) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := cloneInstance(inst)
	for i, in := range s.instances {
		if in.ID == inst.ID {
			s.instances[i] = &c
			return
		}
	}
	s.instances = append(s.instances, &c)
}

// SetInstance changes the instance with this ID in place.
func (s *Server) SetInstance(id string, mutate func(*upgrade.Instance)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.find(id)
	if in == nil {
		s.errorf("upgradetest: SetInstance: no instance %s", id)
		return
	}
	mutate(in)
}

// RemoveInstance deletes the instance with this ID from the project.
func (s *Server) RemoveInstance(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.instances = slices.DeleteFunc(s.instances, func(in *upgrade.Instance) bool { return in.ID == id })
	delete(s.tags, id)
}

// Instance returns the current state of the instance with this ID.
func (s *Server) Instance(id string) (upgrade.Instance, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked()
	in := s.find(id)
	if in == nil {
		return upgrade.Instance{}, false
	}
	return cloneInstance(*in), true
}

func (s *Server) find(id string) *upgrade.Instance {
	for _, in := range s.instances {
		if in.ID == id {
			return in
		}
	}
	return nil
}

// upgradeAction is what the fake puts in an instance's actions while a patch job runs.
const upgradeAction = "UPGRADE_DB_VERSION"

func (s *Server) clearAction(instanceID string) {
	if in := s.find(instanceID); in != nil {
		in.Actions = slices.DeleteFunc(in.Actions, func(a string) bool { return a == upgradeAction })
		if len(in.Actions) == 0 {
			in.Actions = nil
		}
	}
}

func cloneInstance(in upgrade.Instance) upgrade.Instance {
	in.Actions = slices.Clone(in.Actions)
	in.Nodes = slices.Clone(in.Nodes)
	return in
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	offset, limit := 0, 100
	if v := q.Get("offset"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "DBS.200001", "Invalid parameter: offset.")
			return
		}
		offset = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			writeError(w, http.StatusBadRequest, "DBS.200001", "Invalid parameter: limit.")
			return
		}
		limit = n
	}
	id, name, engine := q.Get("id"), q.Get("name"), strings.ToLower(q.Get("datastore_type"))
	s.mu.Lock()
	var match []map[string]any
	for _, in := range s.instances {
		if id != "" && in.ID != id {
			continue
		}
		if name != "" {
			if pat, fuzzy := strings.CutPrefix(name, "*"); fuzzy {
				if !strings.Contains(in.Name, pat) {
					continue
				}
			} else if in.Name != name {
				continue
			}
		}
		if engine != "" && in.Engine != engine {
			continue
		}
		match = append(match, InstanceJSON(*in))
	}
	s.mu.Unlock()
	page := []map[string]any{}
	if offset < len(match) {
		page = match[offset:min(offset+limit, len(match))]
	}
	writeJSON(w, http.StatusOK, map[string]any{"instances": page, "total_count": len(match)})
}

func (s *Server) opsWindow(w http.ResponseWriter, id string) {
	s.mu.Lock()
	in := s.find(id)
	var win string
	if in != nil {
		win = in.MaintenanceWindow
	}
	s.mu.Unlock()
	if in == nil {
		writeError(w, http.StatusNotFound, "DBS.200002", "The DB instance does not exist.")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"maintenance_window": win})
}
