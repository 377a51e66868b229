package upgrade

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// ErrJobNotFound is returned (wrapped) by Job when the API knows no job with that ID.
var ErrJobNotFound = errors.New("job not found")

// BatchUpgrade starts the patch of 1 to MaxBatch instances of one engine:
// POST /v3/{project_id}/instances/db-upgrade. The call starts work
// immediately and takes no idempotency key, so it is made exactly once:
// never retried, whatever the answer. On a 202 it returns one result per
// instance (a job ID or the instance's error code); any other status is an
// *APIError, a 3xx a *RedirectError. When NotSent(err), nothing reached the
// API and nothing was started. Any other failure without an answer (e.g. a
// timeout after sending) leaves the outcome unknown, and says so.
func (c *Client) BatchUpgrade(ctx context.Context, ids []string) ([]UpgradeResult, error) {
	what := fmt.Sprintf("batch upgrade %d instances", len(ids))
	if len(ids) == 0 || len(ids) > MaxBatch {
		return nil, notSent(fmt.Errorf("%s: need 1 to %d instance IDs", what, MaxBatch))
	}
	seen := map[string]bool{}
	for _, id := range ids {
		if strings.TrimSpace(id) == "" {
			return nil, notSent(fmt.Errorf("%s: empty instance ID", what))
		}
		if seen[id] {
			return nil, notSent(fmt.Errorf("%s: instance ID %s given twice", what, id))
		}
		seen[id] = true
	}
	var w struct {
		UpgradeResults []struct {
			InstanceID   flexString `json:"instance_id"`
			JobID        flexString `json:"job_id"`
			ErrorCode    flexString `json:"error_code"`
			ErrorMessage string     `json:"error_message"`
			ErrorMsg     string     `json:"error_msg"`
		} `json:"upgrade_results"`
	}
	body := struct {
		InstanceIDs []string `json:"instance_ids"`
	}{ids}
	err := c.do(ctx, apiCall{name: CallBatchUpgrade, what: what, method: http.MethodPost, path: "/instances/db-upgrade", body: body, retry: false, out: &w})
	if err != nil {
		var apiErr *APIError
		if !errors.As(err, &apiErr) && ctx.Err() == nil && !NotSent(err) {
			return nil, fmt.Errorf("%w (the request may have reached the API: check the instances before patching again)", err)
		}
		return nil, err
	}
	out := make([]UpgradeResult, 0, len(w.UpgradeResults))
	for _, r := range w.UpgradeResults {
		out = append(out, UpgradeResult{
			InstanceID:   string(r.InstanceID),
			JobID:        string(r.JobID),
			ErrorCode:    string(r.ErrorCode),
			ErrorMessage: firstNonEmpty(r.ErrorMessage, r.ErrorMsg),
		})
	}
	return out, nil
}

// jobTimeLayouts are the time formats the jobs API has been seen to use.
var jobTimeLayouts = []string{"2006-01-02T15:04:05-0700", time.RFC3339Nano, "2006-01-02T15:04:05Z0700", "2006-01-02 15:04:05"}

// parseJobTime reads a job time; empty or unreadable times are zero, so
// that an odd format never stops the status of a patch from being followed.
func parseJobTime(s string) time.Time {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}
	}
	for _, l := range jobTimeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t
		}
	}
	return time.Time{}
}

// Job returns the task with the given ID: GET /v3/{project_id}/jobs?id=ID.
// When the API knows no such job the error wraps ErrJobNotFound.
func (c *Client) Job(ctx context.Context, id string) (Job, error) {
	what := "job " + id
	if strings.TrimSpace(id) == "" {
		return Job{}, notSent(errors.New("job: empty job ID"))
	}
	var w struct {
		TotalCount flexInt `json:"total_count"`
		Jobs       []struct {
			ID         flexString `json:"id"`
			Name       flexString `json:"name"`
			Status     flexString `json:"status"`
			Progress   flexString `json:"progress"`
			StartTime  flexString `json:"start_time"`
			EndTime    flexString `json:"end_time"`
			FailReason flexString `json:"fail_reason"`
			Instance   struct {
				ID   flexString `json:"id"`
				Name flexString `json:"name"`
			} `json:"instance"`
		} `json:"jobs"`
	}
	err := c.do(ctx, apiCall{name: CallJob, what: what, method: http.MethodGet, path: "/jobs", query: url.Values{"id": {id}}, retry: true, out: &w})
	if err != nil {
		var apiErr *APIError
		if errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound && !strings.HasPrefix(apiErr.Code, "APIG") {
			return Job{}, fmt.Errorf("%w: %w", ErrJobNotFound, err)
		}
		return Job{}, err
	}
	for _, j := range w.Jobs {
		if string(j.ID) != id {
			continue
		}
		return Job{
			ID:           string(j.ID),
			Name:         string(j.Name),
			Status:       string(j.Status),
			Progress:     string(j.Progress),
			Started:      parseJobTime(string(j.StartTime)),
			Ended:        parseJobTime(string(j.EndTime)),
			InstanceID:   string(j.Instance.ID),
			InstanceName: string(j.Instance.Name),
			FailReason:   string(j.FailReason),
		}, nil
	}
	return Job{}, fmt.Errorf("%s: %w", what, ErrJobNotFound)
}
