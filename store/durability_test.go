package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	bolt "go.etcd.io/bbolt"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store/storetest"
)

// TestBoltPlansCommitWithoutSync checks that the Create of an open plan
// commits without fsync, and that everything else, a plan created with
// WithDurable among it, is synced; and that an unsynced plan is synced
// soon after and survives a reopen.
func TestBoltPlansCommitWithoutSync(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "test.db")
	b, err := Open(path)
	if err != nil {
		t.Fatalf("Open: got error %v, want nil", err)
	}
	defer func() { _ = b.Close() }()
	unsynced := func() int64 { return b.commits.unsynced.Load() }
	mustCreate(t, b, Request{ID: "plan", State: Planned, ExpiresAt: time.Now().Add(time.Hour)})
	if got := unsynced(); got != 1 {
		t.Errorf("after creating a plan: got %d commits without sync, want 1", got)
	}
	if err := b.Create(WithDurable(t.Context()), Request{ID: "durable-plan", State: Planned}); err != nil {
		t.Fatalf("Create: got error %v, want nil", err)
	}
	mustCreate(t, b, Request{ID: "approved", State: Approved})
	if _, err := b.Transition(t.Context(), "plan", []State{Planned}, Submitting, "U1", nil); err != nil {
		t.Fatalf("Transition: got error %v, want nil", err)
	}
	if _, err := b.TransitionLock(t.Context(), "approved", []State{Approved}, Submitting, "U1", nil, takeAll("t/i")); err != nil {
		t.Fatalf("TransitionLock: got error %v, want nil", err)
	}
	if err := b.PutJob(t.Context(), Job{ID: "j", RequestID: "plan"}); err != nil {
		t.Fatalf("PutJob: got error %v, want nil", err)
	}
	if got := unsynced(); got != 1 {
		t.Errorf("after a durable plan, a transition, a lock and a job: got %d commits without sync, want still 1", got)
	}
	// Every later write transaction is synced again: NoSync was reset.
	if err := b.db.View(func(tx *bolt.Tx) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if b.db.NoSync {
		t.Errorf("after a synced commit: db.NoSync is set, want it clear")
	}
	// The pending sync runs within the delay.
	deadline := time.Now().Add(10 * time.Second)
	for {
		b.commits.syncMu.Lock()
		pending := b.commits.syncTimer != nil
		b.commits.syncMu.Unlock()
		if !pending {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sync after an unsynced commit never ran")
		}
		time.Sleep(10 * time.Millisecond)
	}
	mustCreate(t, b, Request{ID: "plan-2", State: Planned})
	if err := b.Close(); err != nil {
		t.Fatalf("Close: got error %v, want nil", err)
	}
	b2, err := Open(path)
	if err != nil {
		t.Fatalf("reopen: got error %v, want nil", err)
	}
	defer func() { _ = b2.Close() }()
	for _, id := range []string{"plan", "durable-plan", "plan-2"} {
		if _, err := b2.Get(t.Context(), id); err != nil {
			t.Errorf("Get(%s) after reopening: got error %v, want nil", id, err)
		}
	}
}

// TestBoltOpenBuildsNewIndexes checks that a file whose open-plan and due
// indexes are missing or stale (written before they existed, or since by
// an older version) gets them when opened.
func TestBoltOpenBuildsNewIndexes(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "test.db")
	b, err := Open(path)
	if err != nil {
		t.Fatalf("Open: got error %v, want nil", err)
	}
	exp := time.Now().Add(time.Hour)
	mustCreate(t, b, Request{ID: "p", State: Planned, Requester: "U1", ExpiresAt: exp})
	mustCreate(t, b, Request{ID: "a", State: Submitted, ResultsPending: true})
	if err := b.PutJob(t.Context(), Job{ID: "j", RequestID: "a"}); err != nil {
		t.Fatal(err)
	}
	// As a file of the version before: the new index buckets are gone.
	err = b.db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketPlansByUser, bucketRequestsDue, bucketJobsDue} {
			if err := tx.DeleteBucket(name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b, err = Open(path)
	if err != nil {
		t.Fatalf("reopen: got error %v, want nil", err)
	}
	defer func() { _ = b.Close() }()
	if n, err := b.OpenPlans(t.Context(), "U1", time.Now()); err != nil || n != 1 {
		t.Errorf("OpenPlans(U1) after reopening: got %d, %v; want 1", n, err)
	}
	if rs, err := b.Due(t.Context(), time.Now(), 0); err != nil || joinIDs(rs) != "a" {
		t.Errorf("Due after reopening: got %v, %v; want a", joinIDs(rs), err)
	}
	if js, err := b.DueJobs(t.Context(), time.Now(), 0); err != nil || joinIDs(js) != "j" {
		t.Errorf("DueJobs after reopening: got %v, %v; want j", joinIDs(js), err)
	}
}

// TestRedisOpenBuildsNewIndexes checks that a prefix written before the
// open-plan and due indexes existed gets them when opened.
func TestRedisOpenBuildsNewIndexes(t *testing.T) {
	t.Parallel()
	addr := storetest.StartRedis(t)
	prefix := testPrefix(t)
	s := openRedis(t, addr, prefix, nil)
	exp := time.Now().Add(time.Hour)
	mustCreate(t, s, Request{ID: "p", State: Planned, Requester: "U1", ExpiresAt: exp})
	mustCreate(t, s, Request{ID: "a", State: Submitted, ResultsPending: true})
	if err := s.PutJob(t.Context(), Job{ID: "j", RequestID: "a"}); err != nil {
		t.Fatal(err)
	}
	if err := s.rdb.Del(t.Context(), s.key(keyRedisIndexes), s.key(keyRedisOpenPlans+"U1"), s.key(keyRedisDue), s.key(keyRedisJobsDue)).Err(); err != nil {
		t.Fatal(err)
	}
	s2 := openRedis(t, addr, prefix, nil)
	if n, err := s2.OpenPlans(t.Context(), "U1", time.Now()); err != nil || n != 1 {
		t.Errorf("OpenPlans(U1) after reopening: got %d, %v; want 1", n, err)
	}
	if rs, err := s2.Due(t.Context(), time.Now(), 0); err != nil || joinIDs(rs) != "a" {
		t.Errorf("Due after reopening: got %v, %v; want a", joinIDs(rs), err)
	}
	if js, err := s2.DueJobs(t.Context(), time.Now(), 0); err != nil || joinIDs(js) != "j" {
		t.Errorf("DueJobs after reopening: got %v, %v; want j", joinIDs(js), err)
	}
}

// TestRedisDurableWaitsForReplica checks that a durable write (WithDurable,
// TransitionLock) waits for a replica when the server has one, and does
// not wait, nor fail, when it has none.
func TestRedisDurableWaitsForReplica(t *testing.T) {
	t.Parallel()
	alone := openRedis(t, storetest.StartRedis(t), testPrefix(t), nil)
	mustCreate(t, alone, Request{ID: "r", State: Approved})
	if _, err := alone.Transition(WithDurable(t.Context()), "r", []State{Approved}, Submitting, "", nil); err != nil {
		t.Fatalf("durable Transition without replicas: got error %v, want nil", err)
	}
	if waited, _ := alone.Waits(); waited != 0 {
		t.Errorf("without replicas: got %d waits, want 0", waited)
	}

	primary := storetest.StartRedis(t)
	host, port := splitAddr(t, primary)
	replica := storetest.StartRedis(t, "--replicaof", host, port)
	s := openRedis(t, primary, testPrefix(t), nil)
	// WAIT returns as soon as the replica acknowledges; a long bound keeps a
	// loaded machine from turning a slow acknowledgement into a short wait.
	s.waitTimeout = 10 * time.Second
	c := redis.NewClient(&redis.Options{Addr: replica})
	defer c.Close()
	// Wait for the replica to be in sync, and for the store to see it.
	deadline := time.Now().Add(20 * time.Second)
	for !s.countReplicas(t.Context()) || !strings.Contains(c.Info(t.Context(), "replication").Val(), "master_link_status:up") {
		if time.Now().After(deadline) {
			t.Fatalf("replica %s never connected to %s", replica, primary)
		}
		time.Sleep(50 * time.Millisecond)
	}
	mustCreate(t, s, Request{ID: "r", State: Approved})
	if waited, _ := s.Waits(); waited != 0 {
		t.Errorf("after a write without WithDurable: got %d waits, want 0", waited)
	}
	if _, err := s.Transition(WithDurable(t.Context()), "r", []State{Approved}, Submitting, "", nil); err != nil {
		t.Fatalf("durable Transition: got error %v, want nil", err)
	}
	if _, err := s.TransitionLock(t.Context(), "r", []State{Submitting}, Submitted, "", nil, takeAll("t/i")); err != nil {
		t.Fatalf("TransitionLock: got error %v, want nil", err)
	}
	if waited, short := s.Waits(); waited != 2 || short != 0 {
		t.Errorf("after a durable transition and a lock: got %d waits, %d short; want 2, 0", waited, short)
	}
	// The replica has the lock: WAIT returned once it had it.
	if h, err := c.Get(t.Context(), s.lockKey("t/i")).Result(); err != nil || h != "r" {
		t.Errorf("the lock on the replica: got %q, %v; want r", h, err)
	}
}

// splitAddr splits host:port.
func splitAddr(t *testing.T, addr string) (string, string) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return host, port
}

// countReplicas asks INFO again (not the cached answer) whether the
// server has a replica.
func (s *Redis) countReplicas(ctx context.Context) bool {
	s.replicas.Store(nil)
	return s.hasReplicas(ctx)
}

// TestRedisReplicasLockOneHolder races two stores sharing a prefix (two
// bot replicas, each with its own connections) for the same instance
// locks, as two requests claiming waves with one instance: each round
// exactly one request gets the instance, the other a *LockedError.
func TestRedisReplicasLockOneHolder(t *testing.T) {
	t.Parallel()
	addr := storetest.StartRedis(t)
	prefix := testPrefix(t)
	replicas := []*Redis{openRedis(t, addr, prefix, nil), openRedis(t, addr, prefix, nil)}
	const rounds = 50
	for round := range rounds {
		key := LockKey("default", fmt.Sprintf("i-%02d", round))
		ids := []string{fmt.Sprintf("a-%02d", round), fmt.Sprintf("b-%02d", round)}
		for _, id := range ids {
			mustCreate(t, replicas[0], Request{ID: id, State: Approved})
		}
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i := range 2 {
			wg.Go(func() {
				_, errs[i] = replicas[i].TransitionLock(t.Context(), ids[i], []State{Approved}, Submitting, "", []string{key}, takeAll(key))
			})
		}
		wg.Wait()
		won := 0
		for i, err := range errs {
			switch {
			case err == nil:
				won++
			case !errors.Is(err, ErrLocked):
				t.Errorf("round %d: %s lost with %v, want ErrLocked", round, ids[i], err)
			}
		}
		if won != 1 {
			t.Errorf("round %d: %d requests got %s, want exactly 1", round, won, key)
		}
	}
}
