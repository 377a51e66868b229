package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/config"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
)

// compact writes a smaller copy of a store whose history was pruned, which
// opens with the same open requests; a store in use is refused.
func TestCompactSubcommand(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "bot.db")
	st, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2000 {
		if err := st.Create(t.Context(), store.Request{ID: fmt.Sprintf("r-%04d", i), State: store.Done, Text: strings.Repeat("x", 500)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Create(t.Context(), store.Request{ID: "r-open", State: store.Planned}); err != nil {
		t.Fatal(err)
	}
	for {
		n, err := st.Prune(t.Context(), time.Now().Add(time.Hour), 500)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	env := environ{lookup: config.MapLookup(map[string]string{"BOT_STORE": path})}
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"compact"}, env, &stdout, &stderr); code != exitFailed {
		t.Errorf("compact of a store in use: got %d, want %d", code, exitFailed)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	stdout.Reset()
	if code := run(context.Background(), []string{"compact"}, env, &stdout, &stderr); code != exitOK {
		t.Fatalf("compact: got %d, want 0\n%s", code, stderr.String())
	}
	before, _ := os.Stat(path)
	after, err := os.Stat(path + ".compacted")
	if err != nil {
		t.Fatal(err)
	}
	if after.Size() >= before.Size()/2 {
		t.Errorf("compacted file is %d bytes, want well under the %d of the pruned one", after.Size(), before.Size())
	}
	c, err := store.Open(path + ".compacted")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if rs, err := c.List(t.Context(), store.Planned); err != nil || len(rs) != 1 {
		t.Errorf("compacted store: got %d open requests (%v), want 1", len(rs), err)
	}
}
