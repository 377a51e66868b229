package main

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/config"
)

// The README's environment table must name every variable Config reads,
// with its default, so the documentation cannot drift from the code.
func TestReadmeDocumentsEveryVariable(t *testing.T) {
	raw, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(line, "|")
		for _, name := range strings.Split(cells[1], ",") {
			name = strings.Trim(strings.TrimSpace(name), "`")
			rows[name] = line
		}
	}
	typ := reflect.TypeFor[config.Config]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		name := f.Tag.Get("envconfig")
		if name == "" {
			continue // not read from the environment
		}
		row, ok := rows[name]
		if !ok {
			t.Errorf("README's environment table has no row for %s", name)
			continue
		}
		if def := f.Tag.Get("default"); def != "" && !strings.Contains(row, "`"+def+"`") {
			t.Errorf("README row for %s does not show its default `%s`: %s", name, def, row)
		}
		if f.Tag.Get("required") == "true" && !strings.Contains(row, "required") {
			t.Errorf("README row for %s does not say it is required: %s", name, row)
		}
	}
	for _, cmd := range []string{"go run . demo # try the bot", "go test -race ./... # run the tests"} {
		if !strings.Contains(string(raw), cmd) {
			t.Errorf("README lacks the set-up command %q", cmd)
		}
	}
	// A newcomer needs exactly two commands: try the bot, run the tests.
	_, setup, found := strings.Cut(string(raw), "## Try it")
	if !found {
		t.Fatal("README has no Try it section")
	}
	if i := strings.Index(setup, "```sh\n"); i >= 0 {
		block, _, _ := strings.Cut(setup[i+len("```sh\n"):], "```")
		if got := strings.Split(strings.TrimSpace(block), "\n"); len(got) != 2 {
			t.Errorf("README's Try it block has %d commands, want 2: %q", len(got), got)
		}
	} else {
		t.Error("README's Try it section has no sh block")
	}
	ci, err := os.ReadFile(".ci/run")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ci), "\ngo test -race ./...\n") {
		t.Error(".ci/run does not run the README's test command `go test -race ./...`")
	}
}
