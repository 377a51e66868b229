package patch

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
)

// claimable creates what each slot claims: request r-1 and its job j-1.
func claimable(t *testing.T, l *Lifecycle, st Store) {
	t.Helper()
	create(t, l, "r-1", Options{}, inst("a", "cassandra", ""))
	putJob(t, st, "r-1", "j-1", "a")
}

// slotIDs are the slots Claim takes, with the ID each is taken on.
var slotIDs = []struct {
	slot Slot
	id   string
}{{SlotReport, "r-1"}, {SlotPoll, "j-1"}}

// TestClaimOneWinner: of 50 claimants at once, one gets the claim.
func TestClaimOneWinner(t *testing.T) {
	t.Parallel()
	for _, tc := range slotIDs {
		t.Run(string(tc.slot), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l, st, _ := newLife(t)
				claimable(t, l, st)
				var wins, held atomic.Int32
				var wg sync.WaitGroup
				for range 50 {
					wg.Go(func() {
						_, err := l.Claim(t.Context(), tc.slot, tc.id, time.Minute)
						switch {
						case err == nil:
							wins.Add(1)
						case errors.Is(err, ErrHeld):
							held.Add(1)
						default:
							t.Errorf("Claim: got error %v, want nil or ErrHeld", err)
						}
					})
				}
				wg.Wait()
				if wins.Load() != 1 || held.Load() != 49 {
					t.Errorf("got %d winners and %d held, want 1 and 49", wins.Load(), held.Load())
				}
			})
		})
	}
}

// TestClaimTakeoverFencing: a claim that ran out can be taken over, and
// its former holder can then neither renew nor release it.
func TestClaimTakeoverFencing(t *testing.T) {
	t.Parallel()
	for _, tc := range slotIDs {
		t.Run(string(tc.slot), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l, st, _ := newLife(t)
				claimable(t, l, st)
				a, err := l.Claim(t.Context(), tc.slot, tc.id, time.Minute)
				if err != nil || a.Token == "" || !a.Until.Equal(time.Now().Add(time.Minute)) {
					t.Fatalf("Claim: got %+v, %v", a, err)
				}
				if _, err := l.Claim(t.Context(), tc.slot, tc.id, time.Minute); !errors.Is(err, ErrHeld) {
					t.Fatalf("Claim while held: got error %v, want ErrHeld", err)
				}
				// Past its expiry but not taken over, it is still a's.
				time.Sleep(time.Minute)
				if err := l.Renew(t.Context(), &a); err != nil || !a.Until.Equal(time.Now().Add(time.Minute)) {
					t.Fatalf("Renew of a claim run out but not taken: got %+v, %v; want renewed", a, err)
				}
				time.Sleep(time.Minute)
				b, err := l.Claim(t.Context(), tc.slot, tc.id, 30*time.Second)
				if err != nil || b.Token == a.Token {
					t.Fatalf("Claim of a claim run out: got %+v, %v; want a new claim", b, err)
				}
				if err := l.Renew(t.Context(), &a); !errors.Is(err, ErrLost) {
					t.Errorf("Renew by the stale holder: got error %v, want ErrLost", err)
				}
				if err := l.Release(t.Context(), a); !errors.Is(err, ErrLost) {
					t.Errorf("Release by the stale holder: got error %v, want ErrLost", err)
				}
				time.Sleep(10 * time.Second)
				if err := l.Renew(t.Context(), &b); err != nil || !b.Until.Equal(time.Now().Add(30*time.Second)) {
					t.Errorf("Renew by the holder: got %+v, %v; want renewed by its TTL", b, err)
				}
				if err := l.Release(t.Context(), b); err != nil {
					t.Fatalf("Release: got error %v, want nil", err)
				}
				if _, err := l.Claim(t.Context(), tc.slot, tc.id, time.Minute); err != nil {
					t.Errorf("Claim after Release: got error %v, want nil", err)
				}
			})
		})
	}
}

// TestClaimErrors: the submission claim is not taken or released on its
// own, and claims of missing records say so.
func TestClaimErrors(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		l, st, _ := newLife(t)
		claimable(t, l, st)
		if _, err := l.Claim(t.Context(), SlotSubmit, "r-1", time.Minute); err == nil {
			t.Errorf("Claim(SlotSubmit): got nil error, want one")
		}
		_, s, _ := l.Confirm(t.Context(), "r-1", "U1")
		if err := l.Release(t.Context(), s.Claim); err == nil {
			t.Errorf("Release of a submission claim: got nil error, want one")
		}
		if err := l.Renew(t.Context(), &s.Claim); err != nil {
			t.Errorf("Renew of a submission claim: got error %v, want nil", err)
		}
		if _, err := l.Claim(t.Context(), SlotReport, "nope", time.Minute); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Claim of a missing request: got error %v, want ErrNotFound", err)
		}
		if _, err := l.Claim(t.Context(), SlotPoll, "nope", time.Minute); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Claim of a missing job: got error %v, want ErrNotFound", err)
		}
		if _, err := l.Claim(t.Context(), SlotPoll, "j-1", 0); err == nil {
			t.Errorf("Claim for no time: got nil error, want one")
		}
	})
}
