// Package lint checks the repository's Dockerfile with BuildKit's own
// parser and linter — the checks `docker build --check` runs — and its
// .dockerignore with the pattern matcher Docker reads it with. It lives in
// a module of its own so the bot's go.mod does not carry BuildKit.
package lint

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/frontend/dockerfile/dockerfile2llb"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerui"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

const repoRoot = "../.."

func readDockerfile(t *testing.T) []byte {
	t.Helper()
	dt, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	return dt
}

// offlineResolver answers BuildKit's image lookups without a registry: every
// base image is a linux/amd64 image with an empty configuration. It records
// the references it was asked for.
type offlineResolver struct {
	mu   sync.Mutex
	refs []string
}

func (r *offlineResolver) ResolveImageConfig(_ context.Context, ref string, _ sourceresolver.Opt) (string, digest.Digest, []byte, error) {
	r.mu.Lock()
	r.refs = append(r.refs, ref)
	r.mu.Unlock()
	cfg, err := json.Marshal(ocispecs.Image{
		Platform: ocispecs.Platform{Architecture: "amd64", OS: "linux"},
		Config:   ocispecs.ImageConfig{Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}},
	})
	if err != nil {
		return "", "", nil, err
	}
	return ref, digest.FromBytes(cfg), cfg, nil
}

// lintDockerfile runs BuildKit's Dockerfile checks (every rule, as `docker
// build --check` does, for every stage) on dt and returns the warnings as
// "line: rule: detail", the build error if any, and the base images it
// looked up.
func lintDockerfile(t *testing.T, dt []byte) (warnings []string, buildErr string, refs []string) {
	t.Helper()
	resolver := &offlineResolver{}
	platform := ocispecs.Platform{Architecture: "amd64", OS: "linux"}
	res, err := dockerfile2llb.DockerfileLint(context.Background(), dt, dockerfile2llb.ConvertOpt{
		Config: dockerui.Config{
			BuildArgs:       map[string]string{"VERSION": "lint"},
			TargetPlatforms: []ocispecs.Platform{platform},
			BuildPlatforms:  []ocispecs.Platform{platform},
		},
		SourceMap:      &llb.SourceMap{Filename: "Dockerfile", Language: "Dockerfile", Data: dt, Definition: &llb.Definition{}},
		TargetPlatform: &platform,
		MetaResolver:   resolver,
	})
	if err != nil {
		t.Fatalf("DockerfileLint: %v", err)
	}
	if res.Error != nil {
		buildErr = res.Error.Message
	}
	for _, w := range res.Warnings {
		line := 0
		if w.Location != nil && len(w.Location.Ranges) > 0 {
			line = int(w.Location.Ranges[0].Start.Line)
		}
		warnings = append(warnings, fmt.Sprintf("%d: %s: %s", line, w.RuleName, w.Detail))
	}
	return warnings, buildErr, resolver.refs
}

// TestDockerfileLint fails on any warning or error of BuildKit's checks for
// the repository's Dockerfile.
func TestDockerfileLint(t *testing.T) {
	warnings, buildErr, refs := lintDockerfile(t, readDockerfile(t))
	if buildErr != "" {
		t.Errorf("the Dockerfile does not build: %s", buildErr)
	}
	for _, w := range warnings {
		t.Errorf("Dockerfile:%s", w)
	}
	// Both base images were looked at, as pinned.
	if len(refs) != 2 {
		t.Errorf("resolved base images %v, want the two FROM images", refs)
	}
	for _, ref := range refs {
		if !strings.Contains(ref, "@sha256:") {
			t.Errorf("base image %s is not pinned by digest", ref)
		}
	}
}

// TestLintCatches shows the checks are on: a Dockerfile with the mistakes
// they exist for gets a warning for each.
func TestLintCatches(t *testing.T) {
	bad := "FROM golang:1.26 as build\nENV GOFLAGS -trimpath\nCOPY ${UNDEFINED_VAR}/a /a\nFROM scratch\nCOPY --from=build /x /x\nCMD run this\n"
	warnings, _, _ := lintDockerfile(t, []byte(bad))
	got := strings.Join(warnings, "\n")
	for _, rule := range []string{"FromAsCasing", "LegacyKeyValueFormat", "UndefinedVar", "JSONArgsRecommended"} {
		if !strings.Contains(got, rule) {
			t.Errorf("no %s warning for the bad Dockerfile; got:\n%s", rule, got)
		}
	}
}

// TestDockerfileRules parses the Dockerfile with BuildKit's parser and its
// instruction parser with the linter, so that the parse-level rules
// (casing, JSON arguments, legacy ENV syntax, empty continuation lines…)
// are seen to be on, and checks what the image promises.
func TestDockerfileRules(t *testing.T) {
	dt := readDockerfile(t)
	ast, err := parser.Parse(strings.NewReader(string(dt)))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	for _, w := range ast.Warnings {
		t.Errorf("parser warning: %s", w.Short)
	}
	var warnings []string
	lint := linter.New(&linter.Config{Warn: func(rule, _, _, msg string, loc []parser.Range) {
		warnings = append(warnings, rule+": "+msg)
	}})
	stages, _, err := instructions.Parse(ast.AST, lint)
	if err != nil {
		t.Fatalf("instructions: %v", err)
	}
	for _, w := range warnings {
		t.Error(w)
	}
	if len(stages) != 2 {
		t.Fatalf("got %d stages, want 2 (build, runtime)", len(stages))
	}
	for _, s := range stages {
		if !strings.Contains(s.BaseName, "@sha256:") {
			t.Errorf("stage %q FROM %s: not pinned by digest", s.Name, s.BaseName)
		}
	}
	final := stages[len(stages)-1]
	var user, entry string
	var healthcheck bool
	for _, cmd := range final.Commands {
		switch c := cmd.(type) {
		case *instructions.UserCommand:
			user = c.User
		case *instructions.EntrypointCommand:
			entry = strings.Join(c.CmdLine, " ")
			if c.PrependShell {
				t.Error("ENTRYPOINT in shell form: there is no shell in the image")
			}
		case *instructions.HealthCheckCommand:
			healthcheck = slices.Contains(c.Health.Test, "healthcheck")
		}
	}
	if user != "65532:65532" {
		t.Errorf("USER %q, want 65532:65532 (distroless nonroot)", user)
	}
	if entry != "/usr/local/bin/geminidb-patch-bot" {
		t.Errorf("ENTRYPOINT %q, want the binary in exec form", entry)
	}
	if !healthcheck {
		t.Error("no HEALTHCHECK running the binary's healthcheck subcommand")
	}
}

// TestDockerignore reads .dockerignore as Docker does and checks that
// secrets, history and local artefacts stay out of the build context while
// everything the build needs goes in.
func TestDockerignore(t *testing.T) {
	f, err := os.Open(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatalf("no .dockerignore: %v", err)
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}
	ignored := func(path string) bool {
		ok, err := pm.MatchesOrParentMatches(path)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	for _, p := range []string{".git", ".git/config", ".env", ".env.local", "geminidb-patch.db", "data/x.db", "geminidb-patch-bot", "bot.test", "cover.out", "deploy/helm/geminidb-patch-bot/values.yaml"} {
		if !ignored(p) {
			t.Errorf("%s goes into the build context; .dockerignore should leave it out", p)
		}
	}
	// What the build needs: the module and every package's sources, with
	// the demo page that is embedded.
	need := []string{"go.mod", "go.sum", "demo/page.html"}
	err = filepath.WalkDir(repoRoot, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(repoRoot, path)
		if d.IsDir() && (rel == ".git" || rel == "deploy") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(rel, ".go") && !strings.HasSuffix(rel, "_test.go") {
			need = append(need, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range need {
		if ignored(p) {
			t.Errorf("%s is left out of the build context, but the build needs it", p)
		}
	}
}
