package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/config"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store/storetest"
)

// Two versions registered on one Redis: /readyz stays ready but says the
// set is mixed, /metrics counts the replicas by version, and doctor warns
// naming both versions. Once the older one is gone, all is one version.
func TestMixedVersionsReported(t *testing.T) {
	addr := storetest.StartRedis(t)
	h := newHarness(t, func(c *config.Config) { c.Store = "redis://" + addr + "/0" })
	st, err := store.OpenRedis(context.Background(), "redis://"+addr+"/0")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	body := h.waitStatus("/readyz", http.StatusOK)
	if !strings.Contains(body, "replicas: ok\n") || !strings.Contains(body, "schema: ok\n") {
		t.Errorf("/readyz of one version: got %q, want replicas and schema ok", body)
	}
	if err := st.Register(t.Context(), "old-pod", "v0.9.0", time.Minute); err != nil {
		t.Fatal(err)
	}
	body = h.waitStatus("/readyz", http.StatusOK)
	if !strings.Contains(body, "replicas: ok (warning: mixed versions: 2 replicas run dev (schema 3), v0.9.0 (schema 3))") {
		t.Errorf("/readyz of two versions: got %q, want it ready and saying the versions are mixed", body)
	}
	_, metrics := h.httpGet("/metrics")
	for _, v := range []string{`version="dev"`, `version="v0.9.0"`} {
		if line, ok := metricLine(metrics, "geminidb_patch_replicas", v); !ok || !strings.HasSuffix(line, " 1") {
			t.Errorf("/metrics: got %q, want geminidb_patch_replicas{%s} 1", line, v)
		}
	}
	var out bytes.Buffer
	doctor(t.Context(), withConfig(h.cfg).config, &out)
	if !strings.Contains(out.String(), "WARN  replicas") || !strings.Contains(out.String(), "v0.9.0 (schema 3)") || !strings.Contains(out.String(), "dev (schema 3)") {
		t.Errorf("doctor with two versions running: got\n%s\nwant a WARN replicas line naming both", out.String())
	}
	if err := st.Deregister(t.Context(), "old-pod"); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	doctor(t.Context(), withConfig(h.cfg).config, &out)
	if !strings.Contains(out.String(), "PASS  replicas             1 running, all dev (schema 3)") {
		t.Errorf("doctor with one version: got\n%s\nwant a PASS replicas line", out.String())
	}
}

// A newer release bumping the schema fences this one: its next write
// fails, the fence is logged, nothing is sent, and Run stops with an error
// saying to upgrade the replica.
func TestFencedReplicaStops(t *testing.T) {
	addr := storetest.StartRedis(t)
	h := newHarness(t, func(c *config.Config) { c.Store = "redis://" + addr + "/0" })
	in := h.addInstances("db", "cassandra", 1)[0]
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	if err := c.Set(t.Context(), store.DefaultRedisPrefix+"schema", "4", 0).Err(); err != nil {
		t.Fatal(err)
	}
	h.slash(alice, opsChannel, in.Name)
	var err error
	select {
	case err = <-h.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("the fenced bot did not stop\nlogs:\n%s", h.logs.String())
	}
	h.done <- nil // for the harness's stop
	if _, ok := errors.AsType[*store.SchemaError](err); !ok || !strings.Contains(err.Error(), "must be upgraded") {
		t.Errorf("Run: got %v, want a *store.SchemaError saying to upgrade", err)
	}
	if !strings.Contains(h.logs.String(), "store schema fence") {
		t.Errorf("the fence is not logged:\n%s", h.logs.String())
	}
	if n := h.gdb.Calls("/instances/db-upgrade"); n != 0 {
		t.Errorf("a fenced replica made %d batch calls, want none", n)
	}
}
