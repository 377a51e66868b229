package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// readmeMaxLines is how long the README may grow: what the bot is, how to
// try it, install it and configure it, and what to do when it goes wrong;
// the rest lives in docs/ and is linked.
const readmeMaxLines = 300

// mdLink is a Markdown link's target: [text](target).
var mdLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// The README stays short, and every link of the README and of docs/*.md to
// a file of the repository (docs/, manifest.yml, …) and to a heading
// (#environment, docs/targets.md#…) resolves, so moving content to docs/
// cannot leave a dangling link behind.
func TestReadmeShortAndLinksResolve(t *testing.T) {
	raw, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(strings.TrimSuffix(string(raw), "\n"), "\n") + 1; n > readmeMaxLines {
		t.Errorf("README.md has %d lines, at most %d: move detail to docs/ and link it", n, readmeMaxLines)
	}
	if docs := checkLinks(t, "README.md"); docs == 0 {
		t.Error("README links nothing in docs/ (messages, performance, Redis, deployment)")
	}
	pages, err := filepath.Glob(filepath.Join("docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, page := range pages {
		checkLinks(t, page)
	}
}

// checkLinks reports every relative link of the Markdown file that does not
// resolve, and returns how many of its links point into docs/.
func checkLinks(t *testing.T, file string) (docs int) {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mdLink.FindAllStringSubmatch(string(raw), -1) {
		target := m[1]
		if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
			continue
		}
		path, anchor, _ := strings.Cut(target, "#")
		dest := file
		if path != "" {
			dest = filepath.Join(filepath.Dir(file), filepath.FromSlash(path))
			if strings.HasPrefix(filepath.ToSlash(dest), "docs/") {
				docs++
			}
			if info, err := os.Stat(dest); err != nil || info.IsDir() {
				t.Errorf("%s links %q, which is not a file of the repository", file, target)
				continue
			}
		}
		if anchor != "" && strings.HasSuffix(dest, ".md") && !hasHeading(t, dest, anchor) {
			t.Errorf("%s links %q, but %s has no heading with the anchor #%s", file, target, dest, anchor)
		}
	}
	return docs
}

// hasHeading reports whether the Markdown file has a heading whose GitHub
// anchor is anchor.
func hasHeading(t *testing.T, file, anchor string) bool {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	fenced := false
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "```") {
			fenced = !fenced
		}
		if fenced || !strings.HasPrefix(line, "#") {
			continue
		}
		if headingAnchor(strings.TrimLeft(line, "#")) == anchor {
			return true
		}
	}
	return false
}

// headingAnchor is the anchor GitHub gives a heading: lower case, spaces to
// hyphens, and everything but letters, digits, hyphens and underscores
// dropped.
func headingAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 127:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func TestHeadingAnchor(t *testing.T) {
	for heading, want := range map[string]string{
		" Environment":     "environment",
		" Finding the IDs": "finding-the-ids",
		" Rollouts: canary, windows, Stop, Retry":   "rollouts-canary-windows-stop-retry",
		" Create the Slack app from `manifest.yml`": "create-the-slack-app-from-manifestyml",
	} {
		if got := headingAnchor(heading); got != want {
			t.Errorf("headingAnchor(%q) = %q, want %q", heading, got, want)
		}
	}
}
