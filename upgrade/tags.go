package upgrade

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// MaxTagFilters is the most tag keys one tag query may name.
const MaxTagFilters = 20

// Tag is one tag of an instance: a key and its value.
type Tag struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// TagFilter is one condition of the tag query: the instance has the tag
// Key with any of Values (with any value at all when Values is empty).
type TagFilter struct {
	Key    string
	Values []string
}

// TagQuery is one page of the tag query: instances that match every one
// of Tags (none: every instance), from Offset (≥ 0), at most Limit
// (1..100; 0 means the API default, 100).
type TagQuery struct {
	Tags   []TagFilter
	Offset int
	Limit  int
}

// TaggedInstance is an instance as the tag query reports it: its ID, name
// and every tag it has.
type TaggedInstance struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Tags []Tag  `json:"tags,omitempty"`
}

// TagPage is one page of the tag query; TotalCount counts every matching
// instance, not just this page.
type TagPage struct {
	Instances  []TaggedInstance
	TotalCount int
}

// ListInstancesByTags returns one page of the instances that carry the
// given tags: POST /v3/{project_id}/instances/resource-instances/action
// with action "filter". Tag filters AND together; the values of one
// filter OR. It is a read and is retried like one.
func (c *Client) ListInstancesByTags(ctx context.Context, q TagQuery) (TagPage, error) {
	const what = "list instances by tags"
	if len(q.Tags) > MaxTagFilters {
		return TagPage{}, notSent(fmt.Errorf("%s: %d tag keys, at most %d", what, len(q.Tags), MaxTagFilters))
	}
	if q.Offset < 0 {
		return TagPage{}, notSent(fmt.Errorf("%s: offset %d is negative", what, q.Offset))
	}
	if q.Limit < 0 || q.Limit > pageSize {
		return TagPage{}, notSent(fmt.Errorf("%s: limit %d is outside 1..%d", what, q.Limit, pageSize))
	}
	type wireTag struct {
		Key    string   `json:"key"`
		Values []string `json:"values"`
	}
	body := struct {
		Action string    `json:"action"`
		Offset string    `json:"offset,omitempty"`
		Limit  string    `json:"limit,omitempty"`
		Tags   []wireTag `json:"tags,omitempty"`
	}{Action: "filter"}
	// The API documents offset and limit as strings.
	body.Offset = strconv.Itoa(q.Offset)
	if q.Limit > 0 {
		body.Limit = strconv.Itoa(q.Limit)
	}
	for _, f := range q.Tags {
		if strings.TrimSpace(f.Key) == "" {
			return TagPage{}, notSent(fmt.Errorf("%s: empty tag key", what))
		}
		values := f.Values
		if values == nil {
			values = []string{} // any value: the API wants the list, empty
		}
		body.Tags = append(body.Tags, wireTag{Key: f.Key, Values: values})
	}
	var w struct {
		Instances []struct {
			ID   flexString `json:"instance_id"`
			Name flexString `json:"instance_name"`
			Tags []struct {
				Key   flexString `json:"key"`
				Value flexString `json:"value"`
			} `json:"tags"`
		} `json:"instances"`
		TotalCount flexInt `json:"total_count"`
	}
	err := c.do(ctx, apiCall{name: CallListByTags, what: what, method: http.MethodPost, path: "/instances/resource-instances/action", body: body, retry: true, out: &w})
	if err != nil {
		return TagPage{}, err
	}
	page := TagPage{TotalCount: int(w.TotalCount), Instances: make([]TaggedInstance, 0, len(w.Instances))}
	for _, wi := range w.Instances {
		ti := TaggedInstance{ID: string(wi.ID), Name: string(wi.Name)}
		for _, t := range wi.Tags {
			ti.Tags = append(ti.Tags, Tag{Key: string(t.Key), Value: string(t.Value)})
		}
		page.Instances = append(page.Instances, ti)
	}
	return page, nil
}

// InstancesByTags returns every instance that carries the given tags (see
// ListInstancesByTags), paging with limit=100.
func (c *Client) InstancesByTags(ctx context.Context, tags []TagFilter) ([]TaggedInstance, error) {
	var all []TaggedInstance
	seen := map[string]bool{}
	for offset := 0; ; offset += pageSize {
		page, err := c.ListInstancesByTags(ctx, TagQuery{Tags: tags, Offset: offset, Limit: pageSize})
		if err != nil {
			return nil, fmt.Errorf("instances by tags (offset %d): %w", offset, err)
		}
		for _, in := range page.Instances {
			if !seen[in.ID] {
				seen[in.ID] = true
				all = append(all, in)
			}
		}
		if len(page.Instances) < pageSize || offset+pageSize >= page.TotalCount {
			return all, nil
		}
	}
}

// TaggedIDs returns the IDs of the instances that carry any one of tags
// (KEY=VALUE each): the set Select takes for a Selector's Tags. Tags of one
// key share one query (its values OR); each further key costs a query of
// its own, as the API ANDs the keys of one query. No tags: an empty set,
// without a call.
func (c *Client) TaggedIDs(ctx context.Context, tags []Tag) (map[string]bool, error) {
	ids := map[string]bool{}
	var keys []string
	values := map[string][]string{}
	for _, t := range tags {
		if _, ok := values[t.Key]; !ok {
			keys = append(keys, t.Key)
		}
		if !slices.Contains(values[t.Key], t.Value) {
			values[t.Key] = append(values[t.Key], t.Value)
		}
	}
	for _, k := range keys {
		found, err := c.InstancesByTags(ctx, []TagFilter{{Key: k, Values: values[k]}})
		if err != nil {
			return nil, fmt.Errorf("tagged instances: %w", err)
		}
		for _, in := range found {
			ids[in.ID] = true
		}
	}
	return ids, nil
}
