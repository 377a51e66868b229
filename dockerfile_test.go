package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// No Docker engine runs in CI, so the Dockerfile's promises are checked as text.
func TestDockerfile(t *testing.T) {
	raw, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(raw)
	froms := regexp.MustCompile(`(?m)^FROM\s+(\S+)`).FindAllStringSubmatch(df, -1)
	if len(froms) < 2 {
		t.Fatalf("got %d FROM lines, want a multi-stage build", len(froms))
	}
	mod, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goLine := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(mod)
	if goLine == nil {
		t.Fatal("go.mod has no go line")
	}
	goMinor := string(goLine[1])
	if !strings.Contains(froms[0][1], "golang:"+goMinor) {
		t.Errorf("build stage %q does not use Go %s from go.mod", froms[0][1], goMinor)
	}
	if !strings.Contains(df, "CGO_ENABLED=0") {
		t.Error("binary is not built static (CGO_ENABLED=0)")
	}
	user := regexp.MustCompile(`(?m)^USER\s+(\S+)`).FindStringSubmatch(df)
	if user == nil || strings.HasPrefix(user[1], "0") || strings.HasPrefix(user[1], "root") {
		t.Errorf("final image runs as %v, want a non-root USER", user)
	}
	vol := regexp.MustCompile(`(?m)^VOLUME\s+\["([^"]+)"\]`).FindStringSubmatch(df)
	store := regexp.MustCompile(`BOT_STORE=(\S+)`).FindStringSubmatch(df)
	if vol == nil || store == nil || !strings.HasPrefix(store[1], vol[1]+"/") {
		t.Errorf("BOT_STORE %v is not on the VOLUME %v", store, vol)
	}
	if !regexp.MustCompile(`(?m)^HEALTHCHECK .*\n?.*healthcheck`).MatchString(df) {
		t.Error("no HEALTHCHECK calling the binary's healthcheck subcommand")
	}
}
