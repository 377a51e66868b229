package store

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	bolt "go.etcd.io/bbolt"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store/storetest"
)

// writeSchema2 writes, as a release of schema 2 does, a submitted request
// with an active job and a done request under prefix.
func writeSchema2(t *testing.T, c *redis.Client, prefix string, reqs []Request, jobs []Job) {
	t.Helper()
	ctx := context.Background()
	p := c.TxPipeline()
	p.SetNX(ctx, prefix+"schema", "2", 0)
	for _, r := range reqs {
		data, _ := json.Marshal(r)
		p.Set(ctx, prefix+"request:"+r.ID, data, 0)
		p.ZAdd(ctx, prefix+"requests", redis.Z{Score: float64(r.CreatedAt.UnixMilli()), Member: r.ID})
		p.ZAdd(ctx, prefix+"state:"+string(r.State), redis.Z{Score: float64(r.UpdatedAt.UnixMicro()), Member: r.ID})
	}
	for _, j := range jobs {
		data, _ := json.Marshal(j)
		p.Set(ctx, prefix+"job:"+j.ID, data, 0)
		p.SAdd(ctx, prefix+"request-jobs:"+j.RequestID, j.ID)
		if j.Active() {
			p.SAdd(ctx, prefix+"active-jobs", j.ID)
		}
	}
	if _, err := p.Exec(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestRedisMovesSchema2Records opens a prefix a release of schema 2 wrote:
// the version becomes 3 (so such a release refuses to start on it), every
// record moves into the key space v3: with its indexes, nothing is left
// where a release of schema 2 reads, and what such a release still writes
// there is moved by the next open.
func TestRedisMovesSchema2Records(t *testing.T) {
	t.Parallel()
	addr := storetest.StartRedis(t)
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	writeSchema2(t, c, "p:", []Request{
		{ID: "r-1", State: Submitted, CreatedAt: t0, UpdatedAt: t0},
		{ID: "r-2", State: Done, CreatedAt: t0.Add(time.Second), UpdatedAt: t0.Add(time.Second)},
	}, []Job{
		{ID: "j-1", RequestID: "r-1", InstanceID: "i-1", Status: "Running"},
		{ID: "j-2", RequestID: "r-2", InstanceID: "i-2", Status: "Completed", Reported: true},
	})

	s := openRedis(t, addr, "p:", nil)
	if v, err := c.Get(t.Context(), "p:schema").Result(); err != nil || v != schemaVersion {
		t.Errorf("p:schema: got %q, %v; want %q", v, err, schemaVersion)
	}
	for _, k := range allKeys(t, addr) {
		if k != "p:schema" && !strings.HasPrefix(k, "p:v3:") {
			t.Errorf("key %q left where a release of schema 2 reads", k)
		}
	}
	if got := listIDs(t.Context(), s, Submitted, Done); got != "r-1,r-2" {
		t.Errorf("List: got %q, want r-1,r-2", got)
	}
	active, err := s.ActiveJobs(t.Context())
	if err != nil || len(active) != 1 || active[0].ID != "j-1" {
		t.Errorf("ActiveJobs: got %v, %v; want j-1", active, err)
	}
	if js, err := s.Jobs(t.Context(), "r-2"); err != nil || len(js) != 1 || js[0].ID != "j-2" {
		t.Errorf("Jobs(r-2): got %v, %v; want j-2", js, err)
	}

	// A replica of schema 2 still running writes a request: the next open
	// moves it too, and leaves what is already moved as it is.
	if _, err := s.Update(t.Context(), "r-1", func(r *Request) error { r.Text = "UNEW"; return nil }); err != nil {
		t.Fatal(err)
	}
	writeSchema2(t, c, "p:", []Request{{ID: "r-3", State: Planned, CreatedAt: t0.Add(2 * time.Second), UpdatedAt: t0}}, nil)
	s2 := openRedis(t, addr, "p:", nil)
	if got := listIDs(t.Context(), s2, Planned, Submitted, Done); got != "r-1,r-2,r-3" {
		t.Errorf("List after the second open: got %q, want r-1,r-2,r-3", got)
	}
	if r, err := s2.Get(t.Context(), "r-1"); err != nil || r.Text != "UNEW" {
		t.Errorf("r-1 after the second open: got %+v, %v; want the update kept", r, err)
	}
	if n, err := c.Exists(t.Context(), "p:request:r-3", "p:requests").Result(); err != nil || n != 0 {
		t.Errorf("schema 2 keys after the second open: got %d, %v; want none", n, err)
	}
}

// fencedBackend is a store whose writes check the schema version.
type fencedBackend interface {
	backend
	Fenced() <-chan struct{}
	FenceError() error
}

// assertFenced checks that writes to b fail with a *SchemaError naming
// version found, that b says it is fenced, and that reads still work.
func assertFenced(t *testing.T, b fencedBackend, found string) {
	t.Helper()
	select {
	case <-b.Fenced():
		t.Fatal("fenced before any write found the newer schema")
	default:
	}
	err := b.Create(t.Context(), Request{ID: "r-new", State: Planned})
	se, ok := errors.AsType[*SchemaError](err)
	if !ok || se.Found != found || se.Want != schemaVersion {
		t.Fatalf("Create on a store of schema %s: got %v, want a *SchemaError (found %s)", found, err, found)
	}
	if _, err := b.Transition(t.Context(), "r-1", []State{Planned}, Cancelled, "U1", nil); !errors.As(err, &se) {
		t.Errorf("Transition on a store of schema %s: got %v, want a *SchemaError", found, err)
	}
	select {
	case <-b.Fenced():
	default:
		t.Error("Fenced: not closed after a write found the newer schema")
	}
	if !errors.As(b.FenceError(), &se) {
		t.Errorf("FenceError: got %v, want the *SchemaError", b.FenceError())
	}
	if r, err := b.Get(t.Context(), "r-1"); err != nil || r.State != Planned {
		t.Errorf("Get while fenced: got %v, %v; want r-1 planned", r.State, err)
	}
	if _, err := b.Get(t.Context(), "r-new"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(r-new): got %v, want ErrNotFound (the fenced Create wrote nothing)", err)
	}
}

// A release that bumps the schema fences the running writers of this one:
// their next write fails, inside its transaction, with a *SchemaError.
func TestRedisWritesFencedByNewerSchema(t *testing.T) {
	t.Parallel()
	addr := storetest.StartRedis(t)
	s := openRedis(t, addr, "p:", nil)
	mustCreate(t, s, Request{ID: "r-1", State: Planned})
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	if err := c.Set(t.Context(), "p:schema", "4", 0).Err(); err != nil {
		t.Fatal(err)
	}
	assertFenced(t, s, "4")
	_, err := OpenRedisWith(context.Background(), "redis://"+addr, RedisOptions{Prefix: "p:"})
	if _, ok := errors.AsType[*SchemaError](err); !ok {
		t.Errorf("OpenRedisWith on schema 4: got %v, want a *SchemaError", err)
	}
}

func TestBoltWritesFencedByNewerSchema(t *testing.T) {
	t.Parallel()
	b := setupWith(t, nil)
	mustCreate(t, b, Request{ID: "r-1", State: Planned})
	if err := b.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySchema, []byte("4")) }); err != nil {
		t.Fatal(err)
	}
	assertFenced(t, b, "4")
}

// The registry lists the live replicas of every version and drops the
// ones whose registration expired.
func TestRedisReplicaRegistry(t *testing.T) {
	t.Parallel()
	addr := storetest.StartRedis(t)
	s := openRedis(t, addr, "p:", nil)
	ctx := t.Context()
	for _, r := range []struct {
		id, version string
		ttl         time.Duration
	}{{"a", "v1.1.0", time.Minute}, {"b", "v1.2.0", time.Minute}, {"c", "v1.2.0", time.Minute}, {"gone", "v1.0.0", -time.Second}} {
		if err := s.Register(ctx, r.id, r.version, r.ttl); err != nil {
			t.Fatal(err)
		}
	}
	rs, err := s.Replicas(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range rs {
		ids = append(ids, r.ID)
	}
	if !slices.Equal(ids, []string{"a", "b", "c"}) {
		t.Errorf("Replicas: got %q, want a, b, c", ids)
	}
	if got, want := Versions(rs), []string{"v1.1.0 (schema 3)", "v1.2.0 (schema 3)"}; !slices.Equal(got, want) {
		t.Errorf("Versions: got %q, want %q", got, want)
	}
	if err := s.Deregister(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	rs, _ = s.Replicas(ctx)
	if got := Versions(rs); !slices.Equal(got, []string{"v1.2.0 (schema 3)"}) {
		t.Errorf("Versions after a deregistered: got %q, want v1.2.0 only", got)
	}
}
