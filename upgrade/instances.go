package upgrade

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// pageSize is the largest page the list API serves.
const pageSize = 100

// resolveConcurrency bounds parallel list calls of Resolve and AllInstances.
const resolveConcurrency = 4

// ListOptions filters GET /v3/{project_id}/instances. Zero fields are not sent.
type ListOptions struct {
	ID            string // exact instance ID
	Name          string // exact name; a leading '*' (fuzzy match) is refused
	DatastoreType string // cassandra, influxdb, redis, mongodb…
	Offset        int    // ≥ 0
	Limit         int    // 1..100; 0 means the API default (100)
}

// InstancePage is one page of the instance list; TotalCount counts the
// whole filtered set, not just this page.
type InstancePage struct {
	Instances  []Instance
	TotalCount int
}

// ListInstances returns one page of instances: GET /v3/{project_id}/instances.
func (c *Client) ListInstances(ctx context.Context, opts ListOptions) (InstancePage, error) {
	if strings.HasPrefix(opts.Name, "*") {
		return InstancePage{}, notSent(fmt.Errorf("list instances: name %q starts with '*', which the API treats as a fuzzy match; only exact names are supported", opts.Name))
	}
	if opts.Offset < 0 {
		return InstancePage{}, notSent(fmt.Errorf("list instances: offset %d is negative", opts.Offset))
	}
	if opts.Limit < 0 || opts.Limit > pageSize {
		return InstancePage{}, notSent(fmt.Errorf("list instances: limit %d is outside 1..%d", opts.Limit, pageSize))
	}
	q := url.Values{}
	if opts.ID != "" {
		q.Set("id", opts.ID)
	}
	if opts.Name != "" {
		q.Set("name", opts.Name)
	}
	if opts.DatastoreType != "" {
		q.Set("datastore_type", opts.DatastoreType)
	}
	if opts.Offset > 0 {
		q.Set("offset", strconv.Itoa(opts.Offset))
	}
	if opts.Limit > 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	var w struct {
		Instances  []wireInstance `json:"instances"`
		TotalCount flexInt        `json:"total_count"`
	}
	err := c.do(ctx, apiCall{name: CallListInstances, what: "list instances", method: http.MethodGet, path: "/instances", query: q, retry: true, out: &w})
	if err != nil {
		return InstancePage{}, err
	}
	page := InstancePage{TotalCount: int(w.TotalCount), Instances: make([]Instance, 0, len(w.Instances))}
	for _, wi := range w.Instances {
		page.Instances = append(page.Instances, wi.instance())
	}
	if opts.ID == "" && opts.Name == "" && opts.DatastoreType == "" {
		c.fleetHint.Store(int64(page.TotalCount))
	}
	return page, nil
}

// AllInstances lists every instance of the project, or of one engine when
// datastoreType is not empty, paging with limit=100.
func (c *Client) AllInstances(ctx context.Context, datastoreType string) ([]Instance, error) {
	var all []Instance
	seen := map[string]bool{}
	for offset := 0; ; offset += pageSize {
		page, err := c.ListInstances(ctx, ListOptions{DatastoreType: datastoreType, Offset: offset, Limit: pageSize})
		if err != nil {
			return nil, fmt.Errorf("all instances (offset %d): %w", offset, err)
		}
		for _, in := range page.Instances {
			// The list can shift between pages; never report an instance twice.
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

// idPattern matches GeminiDB instance IDs: 32 hex digits, "in", two digits.
var idPattern = regexp.MustCompile(`^[0-9a-fA-F]{32}in[0-9]{2}$`)

// LooksLikeID reports whether ref has the shape of a GeminiDB instance ID
// (e.g. 046287aae57843b1a7bc61b7a8812f41in13) rather than a name.
func LooksLikeID(ref string) bool { return idPattern.MatchString(ref) }

// Resolve looks references (instance IDs or exact names) up in the project.
// A name shared by several instances is reported in Ambiguous; a reference
// that matches nothing in Missing. Duplicate and blank references are ignored.
//
// It spends at most min(N, pages of the fleet) list calls for N references
// once the fleet size is known (from any earlier unfiltered list); the very
// first call of a client with N ≥ 2 references probes with one page, so it
// may spend one call more. One reference always costs one call, which is
// made by ID when the reference has the shape of an ID, else by name.
func (c *Client) Resolve(ctx context.Context, refs []string) (Resolution, error) {
	refs = dedupe(refs)
	res := Resolution{Found: map[string]Instance{}, Ambiguous: map[string][]string{}}
	if len(refs) == 0 {
		return res, nil
	}
	wrap := func(err error) error { return fmt.Errorf("resolve %d instance references: %w", len(refs), err) }
	if len(refs) == 1 {
		if err := c.resolveEach(ctx, refs, &res); err != nil {
			return Resolution{}, wrap(err)
		}
		return res, nil
	}
	if hint := c.fleetHint.Load(); hint >= 0 && pages(int(hint)) > len(refs) {
		if err := c.resolveEach(ctx, refs, &res); err != nil {
			return Resolution{}, wrap(err)
		}
		return res, nil
	}
	first, err := c.ListInstances(ctx, ListOptions{Limit: pageSize})
	if err != nil {
		return Resolution{}, wrap(err)
	}
	if p := pages(first.TotalCount); p > len(refs) {
		// Paging would cost more than asking for each reference. IDs found
		// on the first page are settled; names could recur on later pages.
		var rest []string
		for _, ref := range refs {
			if i := slices.IndexFunc(first.Instances, func(in Instance) bool { return in.ID == ref }); i >= 0 {
				res.Found[ref] = first.Instances[i]
				continue
			}
			rest = append(rest, ref)
		}
		if err := c.resolveEach(ctx, rest, &res); err != nil {
			return Resolution{}, wrap(err)
		}
		res.Missing = orderLike(res.Missing, refs)
		return res, nil
	}
	all, err := c.restPages(ctx, first)
	if err != nil {
		return Resolution{}, wrap(err)
	}
	matchLocally(refs, all, &res)
	return res, nil
}

// restPages fetches the pages after first concurrently and returns every
// instance once, in list order.
func (c *Client) restPages(ctx context.Context, first InstancePage) ([]Instance, error) {
	n := pages(first.TotalCount)
	results := make([][]Instance, n)
	results[0] = first.Instances
	if len(first.Instances) >= pageSize && n > 1 {
		err := forEach(ctx, n-1, func(ctx context.Context, i int) error {
			p, err := c.ListInstances(ctx, ListOptions{Offset: (i + 1) * pageSize, Limit: pageSize})
			if err != nil {
				return err
			}
			results[i+1] = p.Instances
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	var all []Instance
	seen := map[string]bool{}
	for _, page := range results {
		for _, in := range page {
			if !seen[in.ID] {
				seen[in.ID] = true
				all = append(all, in)
			}
		}
	}
	return all, nil
}

// resolveEach asks the API once per reference: by ID for ID-shaped
// references, by exact name otherwise.
func (c *Client) resolveEach(ctx context.Context, refs []string, res *Resolution) error {
	found := make([][]Instance, len(refs))
	err := forEach(ctx, len(refs), func(ctx context.Context, i int) error {
		ref := refs[i]
		opts := ListOptions{Limit: pageSize}
		switch {
		case strings.HasPrefix(ref, "*"):
			return nil // a fuzzy pattern is never an exact name: missing
		case LooksLikeID(ref):
			opts.ID = ref
		default:
			opts.Name = ref
		}
		page, err := c.ListInstances(ctx, opts)
		if err != nil {
			return fmt.Errorf("look up %q: %w", ref, err)
		}
		// Filter again locally: exactness must not depend on the server.
		for _, in := range page.Instances {
			if (opts.ID != "" && in.ID == ref) || (opts.Name != "" && in.Name == ref) {
				found[i] = append(found[i], in)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i, ref := range refs {
		classify(ref, found[i], res)
	}
	return nil
}

// matchLocally resolves refs against a complete list: an ID match wins over
// a name match.
func matchLocally(refs []string, all []Instance, res *Resolution) {
	byID := map[string]Instance{}
	byName := map[string][]Instance{}
	for _, in := range all {
		byID[in.ID] = in
		byName[in.Name] = append(byName[in.Name], in)
	}
	for _, ref := range refs {
		if in, ok := byID[ref]; ok {
			res.Found[ref] = in
			continue
		}
		if strings.HasPrefix(ref, "*") {
			res.Missing = append(res.Missing, ref)
			continue
		}
		classify(ref, byName[ref], res)
	}
}

func classify(ref string, matches []Instance, res *Resolution) {
	switch len(matches) {
	case 0:
		res.Missing = append(res.Missing, ref)
	case 1:
		res.Found[ref] = matches[0]
	default:
		ids := make([]string, 0, len(matches))
		for _, in := range matches {
			ids = append(ids, in.ID)
		}
		slices.Sort(ids)
		res.Ambiguous[ref] = slices.Compact(ids)
	}
}

// forEach runs fn for 0..n-1 with at most resolveConcurrency at a time; the
// first error cancels the rest and is returned.
func forEach(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, resolveConcurrency)
	var (
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
	)
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := fn(ctx, i); err != nil {
				once.Do(func() { firstErr = err; cancel() })
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	// The parent context ended before every call was started.
	return ctx.Err()
}

func pages(total int) int {
	if total <= 0 {
		return 1
	}
	return (total + pageSize - 1) / pageSize
}

func dedupe(refs []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, r := range refs {
		r = strings.TrimSpace(r)
		if r == "" || seen[r] {
			continue
		}
		seen[r] = true
		out = append(out, r)
	}
	return out
}

// orderLike sorts subset into the order of the references in order.
func orderLike(subset, order []string) []string {
	idx := map[string]int{}
	for i, r := range order {
		idx[r] = i
	}
	slices.SortStableFunc(subset, func(a, b string) int { return idx[a] - idx[b] })
	return subset
}

// wireInstance is the list API's instance, decoded leniently: only the
// fields patching needs, strings that may arrive as numbers.
type wireInstance struct {
	ID                flexString   `json:"id"`
	Name              flexString   `json:"name"`
	Status            flexString   `json:"status"`
	Mode              flexString   `json:"mode"`
	MaintenanceWindow flexString   `json:"maintenance_window"`
	TimeZone          flexString   `json:"time_zone"`
	Actions           []flexString `json:"actions"`
	Datastore         struct {
		Type           flexString `json:"type"`
		Version        flexString `json:"version"`
		PatchAvailable flexBool   `json:"patch_available"`
		WholeVersion   flexString `json:"whole_version"`
	} `json:"datastore"`
	Groups []struct {
		Nodes []struct {
			ID     flexString `json:"id"`
			Name   flexString `json:"name"`
			Status flexString `json:"status"`
		} `json:"nodes"`
	} `json:"groups"`
}

func (w wireInstance) instance() Instance {
	in := Instance{
		ID:                string(w.ID),
		Name:              string(w.Name),
		Status:            string(w.Status),
		Engine:            strings.ToLower(string(w.Datastore.Type)),
		Version:           string(w.Datastore.Version),
		WholeVersion:      string(w.Datastore.WholeVersion),
		PatchAvailable:    bool(w.Datastore.PatchAvailable),
		MaintenanceWindow: string(w.MaintenanceWindow),
		TimeZone:          string(w.TimeZone),
		Mode:              string(w.Mode),
	}
	for _, a := range w.Actions {
		if a != "" {
			in.Actions = append(in.Actions, string(a))
		}
	}
	for _, g := range w.Groups {
		for _, n := range g.Nodes {
			in.Nodes = append(in.Nodes, Node{ID: string(n.ID), Name: string(n.Name), Status: string(n.Status)})
		}
	}
	return in
}
