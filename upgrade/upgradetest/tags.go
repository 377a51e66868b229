package upgradetest

import (
	"bytes"
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// maxTagKeys is the most tag keys the tag query accepts.
const maxTagKeys = 20

// SetTags replaces the tags of the instance with this ID (nil or empty
// removes them), as tagging it in the console would. The tag query
// (POST /v3/{project_id}/instances/resource-instances/action) finds
// instances by them.
func (s *Server) SetTags(instanceID string, tags map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.find(instanceID) == nil {
		s.errorf("upgradetest: SetTags: no instance %s", instanceID)
		return
	}
	if len(tags) == 0 {
		delete(s.tags, instanceID)
		return
	}
	s.tags[instanceID] = maps.Clone(tags)
}

// Tags returns the tags of the instance with this ID.
func (s *Server) Tags(instanceID string) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.tags[instanceID])
}

// tagQuery serves the tag query as the API documents it: action "filter"
// (a page of instances) or "count" (total_count only); offset and limit as
// strings, limit 1..100 (default 100); at most 20 tags, each a key and the
// values any of which matches (an empty list: any value); the tags AND.
func (s *Server) tagQuery(w http.ResponseWriter, body []byte) {
	var req struct {
		Action string          `json:"action"`
		Offset json.RawMessage `json:"offset"`
		Limit  json.RawMessage `json:"limit"`
		Tags   []struct {
			Key    string   `json:"key"`
			Values []string `json:"values"`
		} `json:"tags"`
		Matches json.RawMessage `json:"matches"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, "DBS.200001", "Invalid parameter: the request body is not valid JSON.")
		return
	}
	if req.Action != "filter" && req.Action != "count" {
		writeError(w, http.StatusBadRequest, "DBS.200001", "Invalid parameter: action must be filter or count.")
		return
	}
	offset, limit := 0, 100
	if req.Action == "filter" {
		var ok bool
		if offset, ok = stringNumber(req.Offset, 0); !ok || offset < 0 {
			writeError(w, http.StatusBadRequest, "DBS.200001", "Invalid parameter: offset must be a string of a number ≥ 0.")
			return
		}
		if limit, ok = stringNumber(req.Limit, 100); !ok || limit < 1 || limit > 100 {
			writeError(w, http.StatusBadRequest, "DBS.200001", "Invalid parameter: limit must be a string of a number from 1 to 100.")
			return
		}
	} else if len(req.Offset) > 0 || len(req.Limit) > 0 {
		writeError(w, http.StatusBadRequest, "DBS.200001", "Invalid parameter: offset and limit are not allowed with action count.")
		return
	}
	if len(req.Tags) > maxTagKeys {
		writeError(w, http.StatusBadRequest, "DBS.200001", "Invalid parameter: at most 20 tags are allowed.")
		return
	}
	for _, t := range req.Tags {
		if strings.TrimSpace(t.Key) == "" {
			writeError(w, http.StatusBadRequest, "DBS.200001", "Invalid parameter: a tag key is empty.")
			return
		}
		if t.Values == nil {
			writeError(w, http.StatusBadRequest, "DBS.200001", "Invalid parameter: values of a tag is required (an empty list matches any value).")
			return
		}
	}
	if len(req.Matches) > 0 && !bytes.Equal(req.Matches, []byte("null")) {
		writeError(w, http.StatusBadRequest, "DBS.200001", "Invalid parameter: matches is not supported by this fake.")
		return
	}
	s.mu.Lock()
	var match []map[string]any
	for _, in := range s.instances {
		tags := s.tags[in.ID]
		ok := true
		for _, t := range req.Tags {
			v, has := tags[t.Key]
			if !has || (len(t.Values) > 0 && !slices.Contains(t.Values, v)) {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		list := []map[string]string{}
		for _, k := range slices.Sorted(maps.Keys(tags)) {
			list = append(list, map[string]string{"key": k, "value": tags[k]})
		}
		match = append(match, map[string]any{"instance_id": in.ID, "instance_name": in.Name, "tags": list})
	}
	s.mu.Unlock()
	if req.Action == "count" {
		writeJSON(w, http.StatusOK, map[string]any{"total_count": len(match)})
		return
	}
	page := []map[string]any{}
	if offset < len(match) {
		page = match[offset:min(offset+limit, len(match))]
	}
	writeJSON(w, http.StatusOK, map[string]any{"instances": page, "total_count": len(match)})
}

// stringNumber reads a number sent as a JSON string ("10"); absent is def.
// A JSON number is refused: the API documents these fields as strings.
func stringNumber(raw json.RawMessage, def int) (int, bool) {
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return def, true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil
}
