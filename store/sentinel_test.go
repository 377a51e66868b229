package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store/storetest"
)

const (
	sentinelDataPassword     = "data-pw-S3cret"
	sentinelSentinelPassword = "sentinel-pw-S3cret"
)

// TestRedisSentinelFailover runs two stores (two bot replicas) on a
// Sentinel set — a primary, a replica and three Sentinels — while the
// primary is stopped mid-run and the Sentinels promote the replica: every
// request created is still there afterwards, each is moved planned →
// submitting → submitted by compare-and-swap races between the two
// replicas, and each of those transitions happened exactly once (its
// history has it once; at most one caller was told it won). A request the
// bot sends is one that won the swap into submitting, so none is lost or
// sent twice across the promotion.
func TestRedisSentinelFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts five Redis processes and waits for a failover")
	}
	t.Parallel()
	set := storetest.StartSentinelSet(t, storetest.SentinelOptions{
		Password: sentinelDataPassword, SentinelPassword: sentinelSentinelPassword,
	})
	url := set.URL(0)
	if !IsSentinelURL(url) {
		t.Fatalf("IsSentinelURL(%q) = false", url)
	}
	openSentinel := func() *Redis {
		t.Helper()
		s, err := OpenRedis(context.Background(), url)
		if err != nil {
			t.Fatalf("OpenRedis(sentinel URL): %v", err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	replicas := []*Redis{openSentinel(), openSentinel()}
	for _, s := range replicas {
		p := s.Path()
		if strings.Contains(p, "pw-S3cret") || !strings.Contains(p, "master_name=mymaster") || !strings.Contains(p, set.Sentinels[2]) {
			t.Errorf("Path() = %q, want the sentinels and the master name, no password", p)
		}
	}

	const (
		n      = 150
		stopAt = 50  // the primary is stopped once this many are started
		after  = 100 // these are started only once the replica is promoted
	)
	var (
		wins     [n][2]atomic.Int32 // per request, per transition: callers told they won
		failures atomic.Int32       // store errors seen (and retried) during the run
		wg       sync.WaitGroup
		errs     = make(chan error, n)
	)
	work := make(chan int)
	for range 4 {
		wg.Go(func() {
			for i := range work {
				if err := raceRequest(replicas, i, &wins[i], &failures); err != nil {
					errs <- err
				}
			}
		})
	}

	var promoted string
	for i := range n {
		if i == stopAt {
			oldMaster := set.MasterAddr()
			if oldMaster != set.Primary {
				t.Fatalf("before the failover the sentinels say the master is %s, want the primary %s", oldMaster, set.Primary)
			}
			go set.StopPrimary(t)
		}
		if i == after {
			promoted = set.WaitFailover(t, 60*time.Second)
		}
		work <- i
		time.Sleep(2 * time.Millisecond)
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if promoted != set.Replica {
		t.Errorf("promoted master %s, want the replica %s", promoted, set.Replica)
	}
	t.Logf("%d requests across the promotion of %s; %d store errors retried meanwhile", n, promoted, failures.Load())

	// A fresh store (a third process) sees every write.
	check := openSentinel()
	for i := range n {
		id := sentinelRequestID(i)
		r, err := check.Get(context.Background(), id)
		if err != nil {
			t.Errorf("%s after the failover: %v", id, err)
			continue
		}
		if r.State != Submitted {
			t.Errorf("%s is %s, want submitted", id, r.State)
		}
		counts := map[string]int{}
		for _, e := range r.History {
			counts[string(e.From)+"→"+string(e.To)]++
		}
		if counts["planned→submitting"] != 1 || counts["submitting→submitted"] != 1 || len(r.History) != 2 {
			t.Errorf("%s history %+v, want planned→submitting and submitting→submitted once each", id, r.History)
		}
		for k, name := range []string{"planned→submitting", "submitting→submitted"} {
			if w := wins[i][k].Load(); w > 1 {
				t.Errorf("%s: %d callers were told they won %s, want at most 1", id, w, name)
			}
		}
	}
}

// sentinelRequestID names request i of the failover test.
func sentinelRequestID(i int) string { return fmt.Sprintf("r-sentinel-%03d", i) }

// raceRequest creates request i through one replica, then both replicas
// race to move it into submitting; the winner (or, when no caller could
// tell it won, the first replica) moves it on into submitted. Store errors
// (the failover) are retried until the operation has an answer; an answer
// after an error may be the caller's own earlier attempt, which had reached
// Redis before the connection broke.
func raceRequest(replicas []*Redis, i int, wins *[2]atomic.Int32, failures *atomic.Int32) error {
	id := sentinelRequestID(i)
	creator := replicas[i%2]
	retried := false
	err := retryStore(failures, func() error {
		err := creator.Create(context.Background(), Request{ID: id, State: Planned, Requester: "U1", Channel: "C1", Text: "patch " + id})
		if err != nil && !errors.Is(err, ErrExists) {
			retried = true
		}
		return err
	})
	if errors.Is(err, ErrExists) && !retried {
		return fmt.Errorf("create %s: %v on the first attempt", id, err)
	} else if err != nil && !errors.Is(err, ErrExists) {
		return fmt.Errorf("create %s: %w", id, err)
	}

	winner := make(chan int, 2)
	var race sync.WaitGroup
	for k, s := range replicas {
		race.Go(func() {
			if transitionOnce(s, id, Planned, Submitting, fmt.Sprintf("U%d", k), failures) {
				wins[0].Add(1)
				winner <- k
			}
		})
	}
	race.Wait()
	close(winner)
	next := 0
	if k, ok := <-winner; ok {
		next = k
	}
	if transitionOnce(replicas[next], id, Submitting, Submitted, "", failures) {
		wins[1].Add(1)
	}
	return nil
}

// transitionOnce moves request id from one state to another, retrying store
// errors; it reports whether this caller was told it won the swap.
func transitionOnce(s *Redis, id string, from, to State, user string, failures *atomic.Int32) bool {
	won := false
	_ = retryStore(failures, func() error {
		_, err := s.Transition(context.Background(), id, []State{from}, to, user, nil)
		won = err == nil
		return err
	})
	return won
}

// retryStore runs op until it returns nil or an answer of the store
// (ErrConflict, ErrExists, ErrNotFound), for at most a minute, counting the
// other errors.
func retryStore(failures *atomic.Int32, op func() error) error {
	deadline := time.Now().Add(time.Minute)
	for {
		err := op()
		if err == nil || errors.Is(err, ErrConflict) || errors.Is(err, ErrExists) || errors.Is(err, ErrNotFound) || time.Now().After(deadline) {
			return err
		}
		failures.Add(1)
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSentinelURLs checks which URLs are Sentinel URLs and that a bad one
// is refused with a message that holds no password.
func TestSentinelURLs(t *testing.T) {
	for url, want := range map[string]bool{
		"redis://:pw@sentinel-1:26379/0?master_name=mymaster&addr=sentinel-2:26379": true,
		"rediss://sentinel-1:26379/0?master_name=mymaster":                          true,
		"redis://localhost:6379/0":                                                  false,
		"redis://:p?w@localhost:6379/0":                                             false,
		"unix:///run/redis.sock?master_name=x":                                      false,
		"/data/geminidb-patch.db":                                                   false,
	} {
		if got := IsSentinelURL(url); got != want {
			t.Errorf("IsSentinelURL(%q) = %v, want %v", url, got, want)
		}
	}
	for url, wantMsg := range map[string]string{
		"redis://:sentpw@s1:26379/0?master_name=&password=datapw":                    "master_name is empty",
		"redis://:sentpw@s1:26379/0?master_name=m&replica_only=true&password=datapw": "replica_only cannot be used",
		"redis://:sentpw@s1:26379/0?master_name=m&addr=nope&password=datapw":         "addr",
		"redis://:sentpw@s1:26379/0?master_name=m&bogus=1&password=datapw":           "unexpected option",
	} {
		_, err := OpenRedis(context.Background(), url)
		if err == nil || !strings.Contains(err.Error(), wantMsg) {
			t.Errorf("OpenRedis(%q): got %v, want an error saying %q", url, err, wantMsg)
			continue
		}
		if strings.Contains(err.Error(), "sentpw") || strings.Contains(err.Error(), "datapw") {
			t.Errorf("OpenRedis(%q): error %q shows a password", url, err)
		}
	}
}

// TestSentinelUnreachable: no Sentinel answers; the error names the
// Sentinels and the master, never a password, and comes within the open
// timeout.
func TestSentinelUnreachable(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", storetest.FreePort(t)) // nothing listens there now
	url := "redis://:sentpw@" + addr + "/0?master_name=mymaster&password=datapw"
	start := time.Now()
	_, err := OpenRedis(context.Background(), url)
	if err == nil {
		t.Fatal("OpenRedis with no Sentinel: got nil error")
	}
	if d := time.Since(start); d > 2*redisOpenTimeout {
		t.Errorf("took %v, want about the open timeout %v", d, redisOpenTimeout)
	}
	msg := err.Error()
	if strings.Contains(msg, "sentpw") || strings.Contains(msg, "datapw") || !strings.Contains(msg, addr) || !strings.Contains(msg, "mymaster") {
		t.Errorf("got %q, want the sentinel address and master name, no password", msg)
	}
	if got := RedactURL(url); strings.Contains(got, "pw") {
		t.Errorf("RedactURL(%q) = %q, shows a password", url, got)
	}
}
