package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store/storetest"
)

// openRedis opens a store on the server at addr with the given prefix and
// clock, closed at cleanup.
func openRedis(t *testing.T, addr, prefix string, now func() time.Time) *Redis {
	t.Helper()
	s, err := OpenRedisWith(context.Background(), "redis://"+addr+"/0", RedisOptions{Prefix: prefix, Now: now})
	if err != nil {
		t.Fatalf("OpenRedisWith: got error %v, want nil", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// testPrefix returns a key prefix of its own for test t.
func testPrefix(t *testing.T) string {
	return "test:" + t.Name() + ":"
}

// allKeys returns every key in database 0 of the server at addr, sorted.
func allKeys(t *testing.T, addr string) []string {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	var keys []string
	iter := c.Scan(context.Background(), 0, "*", 100).Iterator()
	for iter.Next(context.Background()) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatalf("SCAN: %v", err)
	}
	slices.Sort(keys)
	return keys
}

func TestRedisConformance(t *testing.T) {
	t.Parallel()
	addr := storetest.StartRedis(t)
	// One server; each test its own prefix.
	conformance(t, func(t *testing.T, now func() time.Time) backend {
		return openRedis(t, addr, testPrefix(t), now)
	})
}

// TestRedisReplicasOneWinner races two stores (two replicas, each with its
// own connections) to move the same requests out of planned: every time
// exactly one attempt of all wins.
func TestRedisReplicasOneWinner(t *testing.T) {
	t.Parallel()
	addr := storetest.StartRedis(t)
	prefix := testPrefix(t)
	replicas := []*Redis{openRedis(t, addr, prefix, nil), openRedis(t, addr, prefix, nil)}

	const rounds, n = 10, 100
	for round := range rounds {
		id := fmt.Sprintf("r-%d", round)
		mustCreate(t, replicas[0], Request{ID: id, State: Planned})
		var wins, conflicts, others atomic.Int32
		var winner atomic.Value
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				user := fmt.Sprintf("U%d", i)
				_, err := replicas[i%2].Transition(t.Context(), id, []State{Planned, Approved}, Submitting, user, func(r *Request) { r.Approver = user })
				switch {
				case err == nil:
					wins.Add(1)
					winner.Store(user)
				case errors.Is(err, ErrConflict):
					conflicts.Add(1)
				default:
					others.Add(1)
					t.Errorf("Transition: got error %v, want nil or ErrConflict", err)
				}
			})
		}
		close(start)
		wg.Wait()
		if wins.Load() != 1 || conflicts.Load() != n-1 || others.Load() != 0 {
			t.Fatalf("round %d: got %d wins, %d conflicts, %d others; want 1, %d, 0", round, wins.Load(), conflicts.Load(), others.Load(), n-1)
		}
		// Both replicas see the one winner's change, and only it.
		for k, s := range replicas {
			r, err := s.Get(t.Context(), id)
			if err != nil {
				t.Fatalf("replica %d: Get: got error %v, want nil", k, err)
			}
			if len(r.History) != 1 || r.State != Submitting || r.Approver != winner.Load() || r.History[0].User != winner.Load() {
				t.Errorf("replica %d: got %+v, want state submitting with one event, both by the winner %v", k, r, winner.Load())
			}
		}
	}

	// Read-modify-write of a job across replicas loses no increment.
	if err := replicas[0].PutJob(t.Context(), Job{ID: "j1", RequestID: "r-0"}); err != nil {
		t.Fatalf("PutJob: got error %v, want nil", err)
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if _, err := replicas[i%2].UpdateJob(t.Context(), "j1", func(j *Job) error { j.PollErrors++; return nil }); err != nil {
				t.Errorf("UpdateJob: got error %v, want nil", err)
			}
		})
	}
	wg.Wait()
	if j, err := replicas[1].Job(t.Context(), "j1"); err != nil || j.PollErrors != n {
		t.Errorf("got PollErrors %d (error %v), want %d", j.PollErrors, err, n)
	}
}

func TestRedisPrefixIsolation(t *testing.T) {
	t.Parallel()
	addr := storetest.StartRedis(t)
	a := openRedis(t, addr, "bot-a:", nil)
	b := openRedis(t, addr, "bot-b:", nil)

	mustCreate(t, a, Request{ID: "r-1", State: Planned, Text: "a"})
	if _, err := b.Get(t.Context(), "r-1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("b.Get(r-1): got error %v, want ErrNotFound", err)
	}
	mustCreate(t, b, Request{ID: "r-1", State: Planned, Text: "b"})
	if _, err := b.Transition(t.Context(), "r-1", []State{Planned}, Cancelled, "U1", nil); err != nil {
		t.Fatalf("b.Transition: got error %v, want nil", err)
	}
	if r, err := a.Get(t.Context(), "r-1"); err != nil || r.State != Planned || r.Text != "a" {
		t.Errorf("a.Get(r-1): got %+v, %v; want a's own request, still planned", r, err)
	}
	for _, tc := range []struct {
		name string
		s    *Redis
		text string
	}{{"a", a, "a"}, {"b", b, "b"}} {
		rs, err := tc.s.List(t.Context())
		if err != nil || len(rs) != 1 || rs[0].Text != tc.text {
			t.Errorf("%s.List(): got %+v, %v; want only its own request", tc.name, rs, err)
		}
	}

	if err := a.PutJob(t.Context(), Job{ID: "j1", RequestID: "r-1"}); err != nil {
		t.Fatalf("a.PutJob: got error %v, want nil", err)
	}
	if _, err := b.Job(t.Context(), "j1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("b.Job(j1): got error %v, want ErrNotFound", err)
	}
	if js, err := b.Jobs(t.Context(), "r-1"); err != nil || len(js) != 0 {
		t.Errorf("b.Jobs(r-1): got %v, %v; want none", js, err)
	}
	if js, err := b.ActiveJobs(t.Context()); err != nil || len(js) != 0 {
		t.Errorf("b.ActiveJobs(): got %v, %v; want none", js, err)
	}
	if js, err := a.ActiveJobs(t.Context()); err != nil || len(js) != 1 {
		t.Errorf("a.ActiveJobs(): got %v, %v; want j1", js, err)
	}
}

// TestRedisKeysUnderPrefix checks that the default prefix applies and that
// every key the store writes is under it.
func TestRedisKeysUnderPrefix(t *testing.T) {
	t.Parallel()
	addr := storetest.StartRedis(t)
	s, err := OpenRedis(context.Background(), "redis://"+addr)
	if err != nil {
		t.Fatalf("OpenRedis: got error %v, want nil", err)
	}
	defer s.Close()

	mustCreate(t, s, Request{ID: "r-1", State: Planned})
	if _, err := s.Transition(t.Context(), "r-1", []State{Planned}, Submitting, "U1", nil); err != nil {
		t.Fatalf("Transition: got error %v, want nil", err)
	}
	if _, err := s.Update(t.Context(), "r-1", func(r *Request) error { r.ParentTS = "1.2"; return nil }); err != nil {
		t.Fatalf("Update: got error %v, want nil", err)
	}
	if err := s.PutJob(t.Context(), Job{ID: "j1", RequestID: "r-1"}); err != nil {
		t.Fatalf("PutJob: got error %v, want nil", err)
	}
	if _, err := s.UpdateJob(t.Context(), "j1", func(j *Job) error { j.RequestID = "r-2"; return nil }); err != nil {
		t.Fatalf("UpdateJob: got error %v, want nil", err)
	}
	mustAllow(t, s, "U1", 5, time.Minute)
	mustRemember(t, s, "cmd-1", 30*time.Second)

	keys := allKeys(t, addr)
	if len(keys) == 0 {
		t.Fatalf("got no keys, want some")
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, DefaultRedisPrefix) {
			t.Errorf("got key %q, want it under %q", k, DefaultRedisPrefix)
		}
	}
	t.Logf("keys: %q", keys)
	for _, k := range []string{"request:r-1", "job:j1", "limit:U1", "seen:cmd-1"} {
		if !slices.Contains(keys, DefaultRedisPrefix+redisSpace+k) {
			t.Errorf("got keys %q, want %s among them", keys, DefaultRedisPrefix+redisSpace+k)
		}
	}

	// The keys of Allow and Remember expire with their window or ttl.
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	for _, tc := range []struct {
		key string
		max time.Duration
	}{{"limit:U1", time.Minute}, {"seen:cmd-1", 30 * time.Second}} {
		ttl, err := c.PTTL(context.Background(), DefaultRedisPrefix+redisSpace+tc.key).Result()
		if err != nil || ttl <= tc.max-10*time.Second || ttl > tc.max {
			t.Errorf("PTTL %s: got %v, %v; want a little under %v", tc.key, ttl, err, tc.max)
		}
	}
}

// TestRedisReplicasShareLimits checks that Allow and Remember count the
// calls of every replica sharing a prefix.
func TestRedisReplicasShareLimits(t *testing.T) {
	t.Parallel()
	addr := storetest.StartRedis(t)
	prefix := testPrefix(t)
	replicas := []*Redis{openRedis(t, addr, prefix, nil), openRedis(t, addr, prefix, nil)}
	other := openRedis(t, addr, prefix+"other:", nil)

	const n, limit = 100, 10
	var allowed, isNew atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			s := replicas[i%2]
			if ok, err := s.Allow(t.Context(), "U1", limit, time.Minute); err != nil {
				t.Errorf("Allow: got error %v, want nil", err)
			} else if ok {
				allowed.Add(1)
			}
			if ok, err := s.Remember(t.Context(), "cmd-1", time.Minute); err != nil {
				t.Errorf("Remember: got error %v, want nil", err)
			} else if ok {
				isNew.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	if allowed.Load() != limit || isNew.Load() != 1 {
		t.Errorf("got %d hits allowed and %d calls new, want %d and 1", allowed.Load(), isNew.Load(), limit)
	}
	// Another prefix counts on its own.
	if !mustAllow(t, other, "U1", 1, time.Minute) || !mustRemember(t, other, "cmd-1", time.Minute) {
		t.Errorf("under another prefix: got refused or not new, want allowed and new")
	}
}

// TestRedisIndexes checks the index sets themselves: the methods recheck
// what they read from them, so a stale entry would not show in their
// results, only make the sets grow.
func TestRedisIndexes(t *testing.T) {
	t.Parallel()
	addr := storetest.StartRedis(t)
	s := openRedis(t, addr, "p:", nil)
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	members := func(key string) []string {
		t.Helper()
		m, err := c.SMembers(context.Background(), key).Result()
		if err != nil {
			t.Fatalf("SMEMBERS %s: %v", key, err)
		}
		slices.Sort(m)
		return m
	}

	for _, j := range []Job{{ID: "j1", RequestID: "r-1"}, {ID: "j2", RequestID: "r-1"}, {ID: "j3", RequestID: "r-1", Reported: true}} {
		if err := s.PutJob(t.Context(), j); err != nil {
			t.Fatalf("PutJob(%s): got error %v, want nil", j.ID, err)
		}
	}
	if got := members("p:v3:active-jobs"); !slices.Equal(got, []string{"j1", "j2"}) {
		t.Errorf("active-jobs: got %v, want [j1 j2]", got)
	}
	if _, err := s.UpdateJob(t.Context(), "j1", func(j *Job) error { j.Reported = true; return nil }); err != nil {
		t.Fatalf("UpdateJob: got error %v, want nil", err)
	}
	if err := s.PutJob(t.Context(), Job{ID: "j2", RequestID: "r-2", GaveUp: true}); err != nil {
		t.Fatalf("PutJob: got error %v, want nil", err)
	}
	if got := members("p:v3:active-jobs"); len(got) != 0 {
		t.Errorf("active-jobs after j1 was reported and j2 given up: got %v, want none", got)
	}
	if got := members("p:v3:request-jobs:r-1"); !slices.Equal(got, []string{"j1", "j3"}) {
		t.Errorf("request-jobs:r-1 after j2 moved: got %v, want [j1 j3]", got)
	}
	if got := members("p:v3:request-jobs:r-2"); !slices.Equal(got, []string{"j2"}) {
		t.Errorf("request-jobs:r-2 after j2 moved: got %v, want [j2]", got)
	}

	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	mustCreate(t, s, Request{ID: "r-b", State: Planned, CreatedAt: base.Add(time.Minute)})
	mustCreate(t, s, Request{ID: "r-a", State: Planned, CreatedAt: base})
	zs, err := c.ZRangeWithScores(context.Background(), "p:v3:requests", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	want := []redis.Z{{Score: float64(base.UnixMilli()), Member: "r-a"}, {Score: float64(base.Add(time.Minute).UnixMilli()), Member: "r-b"}}
	if !slices.Equal(zs, want) {
		t.Errorf("requests: got %v, want %v", zs, want)
	}

	// The state index: one sorted set per state, scored by UpdatedAt in µs.
	states := func() map[string][]redis.Z {
		t.Helper()
		out := map[string][]redis.Z{}
		for _, key := range allKeys(t, addr) {
			if st, ok := strings.CutPrefix(key, "p:v3:state:"); ok {
				zs, err := c.ZRangeWithScores(context.Background(), key, 0, -1).Result()
				if err != nil {
					t.Fatal(err)
				}
				out[st] = zs
			}
		}
		return out
	}
	ra, _ := s.Get(t.Context(), "r-a")
	rb, _ := s.Get(t.Context(), "r-b")
	z := func(r Request) redis.Z { return redis.Z{Score: float64(r.UpdatedAt.UnixMicro()), Member: r.ID} }
	if got, want := states(), map[string][]redis.Z{"planned": {z(rb), z(ra)}}; !reflect.DeepEqual(got, want) {
		t.Errorf("state index after two creates: got %v, want %v", got, want)
	}
	ra, err = s.Transition(t.Context(), "r-a", []State{Planned}, Done, "U1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := states(), map[string][]redis.Z{"planned": {z(rb)}, "done": {z(ra)}}; !reflect.DeepEqual(got, want) {
		t.Errorf("state index after a transition: got %v, want %v", got, want)
	}
	if _, err := s.Prune(t.Context(), ra.UpdatedAt.Add(time.Nanosecond), 10); err != nil {
		t.Fatal(err)
	}
	if got, want := states(), map[string][]redis.Z{"planned": {z(rb)}}; !reflect.DeepEqual(got, want) {
		t.Errorf("state index after Prune: got %v, want %v", got, want)
	}
}

// TestRedisMigratesSchema1 opens a prefix written before the state index
// existed: Open moves the requests into the key space of schema 3, which
// builds their indexes, and marks the prefix as schema 3.
func TestRedisMigratesSchema1(t *testing.T) {
	t.Parallel()
	addr := storetest.StartRedis(t)
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	ctx := context.Background()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p := c.Pipeline()
	p.Set(ctx, "p:schema", "1", 0)
	const past = 1000 // several batches of the migration
	add := func(r Request) {
		data, _ := json.Marshal(r)
		p.Set(ctx, "p:request:"+r.ID, data, 0)
		p.ZAdd(ctx, "p:requests", redis.Z{Score: float64(r.CreatedAt.UnixMilli()), Member: r.ID})
	}
	for i := range past {
		add(Request{ID: fmt.Sprintf("old-%04d", i), State: Done, CreatedAt: t0, UpdatedAt: t0})
	}
	add(Request{ID: "p-2", State: Planned, CreatedAt: t0.Add(2 * time.Second)})
	add(Request{ID: "p-1", State: Planned, CreatedAt: t0.Add(time.Second)})
	if _, err := p.Exec(ctx); err != nil {
		t.Fatal(err)
	}

	s := openRedis(t, addr, "p:", nil)
	if v, err := c.Get(ctx, "p:schema").Result(); err != nil || v != schemaVersion {
		t.Errorf("p:schema after the migration: got %q, %v; want %q", v, err, schemaVersion)
	}
	before := s.Decoded()
	if got := listIDs(t.Context(), s, Planned); got != "p-1,p-2" {
		t.Errorf("List(planned): got %q, want p-1,p-2", got)
	}
	if n := s.Decoded() - before; n != 2 {
		t.Errorf("List(planned) decoded %d records, want 2", n)
	}
	if n, err := c.ZCard(ctx, "p:v3:state:done").Result(); err != nil || n != past {
		t.Errorf("p:v3:state:done: got %d members, %v; want %d", n, err, past)
	}
	if n := mustPrune(t, s, t0.Add(time.Second), 2*past); n != past {
		t.Errorf("Prune after the migration: got %d deleted, want %d", n, past)
	}
	// A second open finds nothing to do.
	openRedis(t, addr, "p:", nil)
	if got := listIDs(t.Context(), s, Planned, Done); got != "p-1,p-2" {
		t.Errorf("List(planned, done) after reopening: got %q, want p-1,p-2", got)
	}
}

func TestOpenRedisUnreachable(t *testing.T) {
	t.Parallel()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(storetest.FreePort(t))) // nothing listens there now
	start := time.Now()
	s, err := OpenRedis(context.Background(), "redis://:secretpw@"+addr+"/0")
	if err == nil {
		_ = s.Close()
		t.Fatalf("OpenRedis: got nil error, want one")
	}
	t.Logf("OpenRedis: %v", err)
	if !strings.Contains(err.Error(), addr) {
		t.Errorf("got error %q, want it to name the address %s", err, addr)
	}
	if strings.Contains(err.Error(), "secretpw") {
		t.Errorf("got error %q, want it not to contain the password", err)
	}
	if d := time.Since(start); d > redisOpenTimeout+2*time.Second {
		t.Errorf("OpenRedis took %v, want at most about %v", d, redisOpenTimeout)
	}
}

func TestOpenRedisBadURL(t *testing.T) {
	t.Parallel()
	for _, u := range []string{
		"redis://:secretpw@127.0.0.1:notaport/0",
		"redis://user:secretpw@127.0.0.1:6379/notadb",
		"redis://:secretpw@127.0.0.1:6379/0/1",
		"redis://:secretpw@127.0.0.1:6379/0?bogus=1",
		"redis://:secretpw@127.0.0.1:6379/0?dial_timeout=secretpw",
		"http://:secretpw@127.0.0.1:6379/0",
		"redis://:secretpw@[::1/0",
		"redis://:secretpw@127.0.0.1:6379/%zz",
		"redis://:secret%41pw@127.0.0.1:notaport/0",
		"redis://:secret%41pw@127.0.0.1:6379/0?dial_timeout=secretApw",
		"redis://:secret%41pw@127.0.0.1:6379/0?dial_timeout=secret%41pw",
	} {
		s, err := OpenRedis(context.Background(), u)
		if err == nil {
			_ = s.Close()
			t.Errorf("OpenRedis(%q): got nil error, want one", u)
			continue
		}
		t.Logf("OpenRedis(%q): %v", u, err)
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("OpenRedis(%q): got error %q, want it not to contain the password", u, err)
		}
	}
}

// TestRedisPassword checks that a password in the URL authenticates, that
// Path leaves it out, and that a wrong one fails without being shown.
func TestRedisPassword(t *testing.T) {
	t.Parallel()
	addr := storetest.StartRedis(t, "--requirepass", "secretpw")

	s, err := OpenRedis(context.Background(), "redis://:secretpw@"+addr+"/0")
	if err != nil {
		t.Fatalf("OpenRedis with the password: got error %v, want nil", err)
	}
	if want := "redis://" + addr + "/0"; s.Path() != want {
		t.Errorf("Path: got %q, want %q", s.Path(), want)
	}
	if err := s.Ping(t.Context()); err != nil {
		t.Errorf("Ping: got error %v, want nil", err)
	}
	mustCreate(t, s, Request{ID: "r-1", State: Planned})
	if err := s.Close(); err != nil {
		t.Errorf("Close: got error %v, want nil", err)
	}
	if err := s.Ping(t.Context()); err == nil {
		t.Errorf("Ping after Close: got nil error, want one")
	}

	for _, u := range []string{"redis://:wrongpw@" + addr + "/3", "redis://" + addr + "/3"} {
		s, err := OpenRedis(context.Background(), u)
		if err == nil {
			_ = s.Close()
			t.Fatalf("OpenRedis(%q): got nil error, want one", u)
		}
		t.Logf("OpenRedis(%q): %v", u, err)
		if strings.Contains(err.Error(), "wrongpw") || !strings.Contains(err.Error(), "redis://"+addr+"/3") {
			t.Errorf("OpenRedis(%q): got error %q, want it to name redis://%s/3 and not the password", u, err, addr)
		}
	}
}

func TestRedisSchemaVersion(t *testing.T) {
	t.Parallel()
	addr := storetest.StartRedis(t)
	openRedis(t, addr, "p:", nil)
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	if v, err := c.Get(context.Background(), "p:schema").Result(); err != nil || v != schemaVersion {
		t.Fatalf("p:schema: got %q, %v; want %q", v, err, schemaVersion)
	}
	if err := c.Set(context.Background(), "p:schema", "99", 0).Err(); err != nil {
		t.Fatal(err)
	}
	_, err := OpenRedisWith(context.Background(), "redis://"+addr, RedisOptions{Prefix: "p:"})
	if err == nil || !regexp.MustCompile(`schema version at key p:schema is "99"`).MatchString(err.Error()) {
		t.Errorf("OpenRedisWith with an unknown schema: got error %v, want one naming version 99", err)
	}
}

func TestURLPassword(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"redis://:pw@h:1/0", "pw"},
		{"redis://u:pw@h/0", "pw"},
		{"redis://u@h/0", ""},
		{"redis://h:1/0", ""},
		{"redis://:p%41w@h:1/0", "p%41w"},
		{"redis://:p@w@h:1/0", "p@w"},
		{"unix://:pw@/tmp/redis.sock", "pw"},
		{"redis://:1234/secret@h:6379/0", "1234/secret"},
		{"redis://:abc#def@h", "abc#def"},
		{"redis://:a?b@h/0", "a?b"},
		{"nonsense", ""},
	} {
		if got := urlPassword(tc.in); got != tc.want {
			t.Errorf("urlPassword(%q): got %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestRedactedRedisURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"redis://:pw@10.0.0.5:6380/2", "redis://10.0.0.5:6380/2"},
		{"redis://user:pw@cache", "redis://cache:6379/0"},
		{"REDISS://u:pw@cache.example:6390/1?dial_timeout=3s", "rediss://cache.example:6390/1"},
		{"unix://:pw@/run/redis.sock?db=4", "unix:///run/redis.sock?db=4"},
	} {
		o, err := redis.ParseURL(tc.in)
		if err != nil {
			t.Fatalf("ParseURL(%q): %v", tc.in, err)
		}
		if got := redactedRedisURL(tc.in, o); got != tc.want {
			t.Errorf("redactedRedisURL(%q): got %q, want %q", tc.in, got, tc.want)
		}
	}
}

// RedactURL drops a password even when it holds characters net/url would
// take for the end of the user information.
func TestRedactURLUnescapedPasswords(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, secret string }{
		{"redis://:1234/secret@h:6379/0", "secret"},
		{"redis://:abc#def@h:6379/0", "def"},
		{"redis://:a?bcd@h/0", "bcd"},
		{"redis://user:plain@h:6379/0", "plain"},
	} {
		got := RedactURL(tc.in)
		if strings.Contains(got, tc.secret) || !strings.Contains(got, "h") {
			t.Errorf("RedactURL(%q) = %q, want it without %q", tc.in, got, tc.secret)
		}
	}
}
