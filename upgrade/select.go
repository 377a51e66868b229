package upgrade

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// Selector picks instances of a project by what they are instead of by
// name: the selectors of a fleet command (engine:, name:, tag:, all).
// Kinds AND together; several values of one kind OR. A zero Selector picks
// nothing, so that forgetting to set one never means "everything".
type Selector struct {
	All     bool     `json:"all,omitempty"`     // all: every instance (ANDed with any other kind given)
	Engines []string `json:"engines,omitempty"` // engine:E, e.g. cassandra, influxdb (case-insensitive)
	Names   []string `json:"names,omitempty"`   // name:GLOB, matched against the whole name (see MatchGlob)
	Tags    []Tag    `json:"tags,omitempty"`    // tag:KEY=VALUE, answered by the tag query (see TaggedIDs)
}

// IsZero reports whether s selects nothing at all.
func (s Selector) IsZero() bool {
	return !s.All && len(s.Engines) == 0 && len(s.Names) == 0 && len(s.Tags) == 0
}

// Matches reports whether s picks in. tagged is the set of instance IDs
// that carry any of s.Tags (TaggedIDs(ctx, s.Tags)); it is read only when
// s.Tags is not empty.
func (s Selector) Matches(in Instance, tagged map[string]bool) bool {
	if s.IsZero() {
		return false
	}
	if len(s.Engines) > 0 && !slices.ContainsFunc(s.Engines, func(e string) bool { return strings.EqualFold(e, in.Engine) }) {
		return false
	}
	if len(s.Names) > 0 && !slices.ContainsFunc(s.Names, func(g string) bool { return MatchGlob(g, in.Name) }) {
		return false
	}
	if len(s.Tags) > 0 && !tagged[in.ID] {
		return false
	}
	return true
}

// Select returns the instances that sel picks (see Selector.Matches), in
// their order. It is pure: whether they have a patch available, are
// healthy or in their window is the plan's business, not the selector's.
func Select(instances []Instance, tagged map[string]bool, sel Selector) []Instance {
	var out []Instance
	for _, in := range instances {
		if sel.Matches(in, tagged) {
			out = append(out, in)
		}
	}
	return out
}

// SelectInstances returns the project's instances that sel picks, in the
// list's order: every instance (of one engine when sel names exactly one),
// paged, plus the tag query when sel has Tags (see TaggedIDs). A zero sel
// picks nothing and makes no call.
func (c *Client) SelectInstances(ctx context.Context, sel Selector) ([]Instance, error) {
	if sel.IsZero() {
		return nil, nil
	}
	engine := ""
	if len(sel.Engines) == 1 {
		engine = strings.ToLower(sel.Engines[0])
	}
	var tagged map[string]bool
	if len(sel.Tags) > 0 {
		var err error
		if tagged, err = c.TaggedIDs(ctx, sel.Tags); err != nil {
			return nil, fmt.Errorf("select instances: %w", err)
		}
		if len(tagged) == 0 {
			return nil, nil
		}
	}
	all, err := c.AllInstances(ctx, engine)
	if err != nil {
		return nil, fmt.Errorf("select instances: %w", err)
	}
	return Select(all, tagged, sel), nil
}

// MatchGlob reports whether name matches the shell-style pattern as a
// whole: '*' matches any run of characters (none included), '?' exactly
// one; every other character matches itself, case-sensitively. Unlike
// path.Match it gives '/', '[' and '\' no meaning.
func MatchGlob(pattern, name string) bool {
	p, n := []rune(pattern), []rune(name)
	// Greedy match with one backtrack point, the last '*': linear in
	// practice, never exponential.
	pi, ni, star, mark := 0, 0, -1, 0
	for ni < len(n) {
		switch {
		case pi < len(p) && (p[pi] == '?' || p[pi] == n[ni]):
			pi++
			ni++
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, ni
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			ni = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}
