package upgrade_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade/upgradetest"
)

func TestNewTransport(t *testing.T) {
	tr := upgrade.NewTransport()
	if tr.MaxIdleConnsPerHost < 32 || tr.MaxIdleConns < tr.MaxIdleConnsPerHost || tr.IdleConnTimeout <= 0 ||
		tr.TLSHandshakeTimeout <= 0 || tr.ResponseHeaderTimeout <= 0 || !tr.ForceAttemptHTTP2 || tr.Proxy == nil || tr.DialContext == nil {
		t.Errorf("got %+v, want a pool of at least 32 idle connections per host, every timeout set, HTTP/2, proxies", tr)
	}
	if upgrade.NewTransport() == tr {
		t.Error("got the same transport twice, want one per client")
	}
}

// A client reuses its keep-alive connections: calls in a row use one,
// 32 callers at once use about 32, however many calls each makes.
func TestClientReusesConnections(t *testing.T) {
	s := upgradetest.NewServer(t, upgradetest.WithToken(testToken))
	s.AddInstance(upgradetest.NewInstance("c", "cassandra"))
	c := newTokenClient(t, s)
	ctx := context.Background()
	for range 50 {
		if _, err := c.ListInstances(ctx, upgrade.ListOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.Connections(); got != 1 {
		t.Errorf("50 calls in a row: got %d connections, want 1", got)
	}
	// The fake answers after a little while, so that the callers overlap.
	s.SetDelay("/instances", 5*time.Millisecond)
	const callers, calls = 32, 10
	var wg sync.WaitGroup
	errs := make(chan error, callers*calls)
	for range callers {
		wg.Go(func() {
			for range calls {
				if _, err := c.ListInstances(ctx, upgrade.ListOptions{}); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// http.DefaultTransport keeps 2 idle connections per host: it would
	// open about 30 new ones for each round of the 32 callers, ~300 in all.
	if got := s.Connections(); got > callers+8 {
		t.Errorf("%d callers × %d calls: got %d connections, want at most %d", callers, calls, got, callers+8)
	}
	t.Logf("%d connections for %d calls", s.Connections(), 50+callers*calls)
}
