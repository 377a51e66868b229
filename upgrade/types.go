// Package upgrade speaks to the GeminiDB API: authentication (token, IAM
// password, AK/SK), instance lookup, the batch patch call and jobs, and the
// patch plan (preflight checks, grouping by engine, batches of at most ten).
// It knows nothing about Slack.
package upgrade

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// MaxBatch is the most instance IDs the batch API accepts in one call.
const MaxBatch = 10

// Instance is one GeminiDB instance as the list API describes it, reduced to
// what patching needs.
type Instance struct {
	ID                string   `json:"id"`
	Name              string   `json:"name"`
	Status            string   `json:"status"`
	Engine            string   `json:"engine"`        // datastore.type: cassandra, influxdb, redis, mongodb…
	Version           string   `json:"version"`       // datastore.version
	WholeVersion      string   `json:"whole_version"` // datastore.whole_version
	PatchAvailable    bool     `json:"patch_available"`
	MaintenanceWindow string   `json:"maintenance_window"` // "02:00-06:00", UTC
	TimeZone          string   `json:"time_zone,omitempty"`
	Mode              string   `json:"mode,omitempty"`
	Actions           []string `json:"actions,omitempty"` // operations in progress, e.g. REBOOT; see Upgrading
	Nodes             []Node   `json:"nodes,omitempty"`   // flattened groups[].nodes[]
}

// Node is one node of an instance; a node whose status is not "normal" blocks patching.
type Node struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Status string `json:"status"`
}

// UpgradeResult is the batch API's answer for one instance: a JobID when the
// patch task was submitted, otherwise ErrorCode and ErrorMessage.
type UpgradeResult struct {
	InstanceID   string `json:"instance_id"`
	JobID        string `json:"job_id,omitempty"`
	ErrorCode    string `json:"error_code,omitempty"`
	ErrorMessage string `json:"error_message,omitempty"`
}

// Submitted reports whether the API accepted the instance's patch task.
func (r UpgradeResult) Submitted() bool { return r.JobID != "" }

// Job statuses as the jobs API reports them.
const (
	JobRunning   = "Running"
	JobCompleted = "Completed"
	JobFailed    = "Failed"
)

// Job is one asynchronous task as GET /v3/{project_id}/jobs?id= reports it.
type Job struct {
	ID           string    `json:"id"`
	Name         string    `json:"name"`
	Status       string    `json:"status"`   // Running, Completed, Failed
	Progress     string    `json:"progress"` // "14%" while running, else ""
	Started      time.Time `json:"start_time"`
	Ended        time.Time `json:"end_time"` // zero while running
	InstanceID   string    `json:"instance_id"`
	InstanceName string    `json:"instance_name"`
	FailReason   string    `json:"fail_reason,omitempty"`
}

// Finished reports whether the job has reached a final status.
func (j Job) Finished() bool { return j.Status == JobCompleted || j.Status == JobFailed }

// APIError is a non-2xx answer from the GeminiDB (or IAM) API, carrying the
// cloud's error_code and error_msg verbatim. Classify it with errors.As.
type APIError struct {
	Status    int    // HTTP status code
	Code      string // error_code, e.g. DBS.200011 or APIG.0301
	Message   string // error_msg (or error_message)
	Method    string // HTTP method of the failed call
	Path      string // URL path of the failed call, no query, no host
	RequestID string // X-Request-Id of the answer, when present
}

// Error renders the error for operators and users alike; it never contains
// credentials because requests' headers are not part of it.
func (e *APIError) Error() string {
	code := e.Code
	if code == "" {
		code = "HTTP " + fmt.Sprint(e.Status)
	}
	msg := e.Message
	if msg == "" {
		msg = "(no message)"
	}
	s := fmt.Sprintf("%s %s: %d %s: %s", e.Method, e.Path, e.Status, code, msg)
	if e.RequestID != "" {
		s += " (request " + e.RequestID + ")"
	}
	return s
}

// Upgrading reports whether the instance shows an upgrade (a patch) in
// progress: one of its Actions, or its Status, names an upgrade or a patch.
// The API documents actions only by example (REBOOT) and no upgrading
// status, so the words are matched loosely, ignoring case and separators:
// UPGRADE_DB_VERSION, UPGRADE_DATABASE (the task list's name for a patch),
// UpgradeDbVersion (the patch job's name), DB_PATCH, an "upgrading" status.
// Meant for an instance whose batch outcome is unknown: true lets the bot
// say an upgrade is in progress on it (whoever started it); false proves
// nothing, as a patch may not show yet or may already be over.
func (i Instance) Upgrading() bool {
	if upgradeWord(i.Status) {
		return true
	}
	return slices.ContainsFunc(i.Actions, upgradeWord)
}

// upgradeWord reports whether s, stripped of case and separators, names an
// upgrade or a patch.
func upgradeWord(s string) bool {
	w := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' {
			return r - 'a' + 'A'
		}
		if r >= 'A' && r <= 'Z' {
			return r
		}
		return -1
	}, s)
	return strings.Contains(w, "UPGRAD") || strings.Contains(w, "PATCH")
}
