package patch

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
)

// Errors of claims, returned wrapped; test for them with errors.Is.
var (
	// ErrHeld means another holder's claim has not run out: someone else
	// is doing the work.
	ErrHeld = errors.New("claimed by another holder")
	// ErrLost means the claim is no longer the caller's: it ran out and was
	// taken over, or was released or ended. Its former holder must not
	// send, post or record anything more under it.
	ErrLost = errors.New("claim lost")
	// ErrStopped means the request was stopped: the batch must not be sent.
	ErrStopped = errors.New("request stopped")
)

// Slot names what a claim holds, and so where it is kept.
type Slot string

// The slots of claims.
const (
	// SlotSubmit is the sending of a request's wave (Request.Owner and
	// LeaseUntil). It is taken only with the swap that starts the wave
	// (Confirm, Approve, SendWave) or by Recover, and ended by EndSend.
	SlotSubmit Slot = "submit"
	// SlotReport is the posting of a request's thread reports (batch
	// answers, final summary): Request.SummaryBy and SummaryUntil.
	SlotReport Slot = "report"
	// SlotPoll is the next read of a job: Job.PollBy and PollUntil. Taken
	// for one poll interval and left to run out, it lets one replica read
	// the job per interval.
	SlotPoll Slot = "poll"
)

// Claim is the right, until Until, to do one piece of work that must be
// done by one process at a time: a random token of its own, kept on the
// record it is about, and an expiry after which another may take it over.
// Renewing it, releasing it and every write made under it check the token,
// so a holder that stalled past its expiry and was taken over is fenced
// off: it gets ErrLost.
type Claim struct {
	Slot  Slot
	ID    string // the request's ID, or the job's for SlotPoll
	Token string
	Until time.Time
	TTL   time.Duration // how long each renewal extends it
}

// holder is where a slot keeps its claim on a record.
type holder struct {
	by    *string
	until *time.Time
}

// requestHolder is where slot s keeps its claim on r.
func requestHolder(s Slot, r *store.Request) holder {
	if s == SlotSubmit {
		return holder{&r.Owner, &r.LeaseUntil}
	}
	return holder{&r.SummaryBy, &r.SummaryUntil}
}

// take gives the slot to token until now+ttl, unless another claim holds
// it still.
func (h holder) take(token string, now time.Time, ttl time.Duration) error {
	if *h.by != "" && now.Before(*h.until) {
		return fmt.Errorf("%w until %s", ErrHeld, h.until.UTC().Format(time.RFC3339))
	}
	*h.by, *h.until = token, now.Add(ttl)
	return nil
}

// renew extends c, if it still holds the slot, to now+c.TTL. A claim past
// its expiry that nobody took over is still its holder's.
func (h holder) renew(c Claim, now time.Time) error {
	if *h.by != c.Token {
		return ErrLost
	}
	*h.until = now.Add(c.TTL)
	return nil
}

// release frees the slot if c holds it.
func (h holder) release(c Claim) error {
	if *h.by != c.Token {
		return ErrLost
	}
	*h.by, *h.until = "", time.Time{}
	return nil
}

// newToken returns a fresh random claim token.
func newToken() string {
	return "claim-" + rand.Text()
}

// Claim takes slot (SlotReport or SlotPoll) of request or job id for ttl:
// of several claimants, one gets it; the others get ErrHeld until it runs
// out or is released. SlotSubmit is taken only by the verbs that start a
// wave and by Recover.
func (l *Lifecycle) Claim(ctx context.Context, slot Slot, id string, ttl time.Duration) (Claim, error) {
	c := Claim{Slot: slot, ID: id, Token: newToken(), TTL: ttl}
	if ttl <= 0 {
		return Claim{}, fmt.Errorf("claim %s of %s: ttl %v is not positive", slot, id, ttl)
	}
	var err error
	switch slot {
	case SlotReport:
		_, err = l.st.Update(ctx, id, func(x *store.Request) error {
			now := l.now()
			c.Until = now.Add(ttl)
			return requestHolder(slot, x).take(c.Token, now, ttl)
		})
	case SlotPoll:
		_, err = l.st.UpdateJob(ctx, id, func(x *store.Job) error {
			now := l.now()
			c.Until = now.Add(ttl)
			if err := (holder{&x.PollBy, &x.PollUntil}).take(c.Token, now, ttl); err != nil {
				return err
			}
			x.NextPoll = x.PollUntil // DueJobs returns it again once the claim ran out
			return nil
		})
	default:
		err = fmt.Errorf("slot %q cannot be claimed on its own", slot)
	}
	if err != nil {
		return Claim{}, fmt.Errorf("claim %s of %s: %w", slot, id, err)
	}
	return c, nil
}

// Renew extends c by its TTL from now, if it is still the holder's
// (ErrLost otherwise, and then the holder must stop). A submission claim is
// renewed only while its request is submitting.
func (l *Lifecycle) Renew(ctx context.Context, c *Claim) error {
	var until time.Time
	var err error
	switch c.Slot {
	case SlotSubmit, SlotReport:
		_, err = l.st.Update(ctx, c.ID, func(x *store.Request) error {
			if c.Slot == SlotSubmit && x.State != store.Submitting {
				return ErrLost
			}
			h := requestHolder(c.Slot, x)
			if err := h.renew(*c, l.now()); err != nil {
				return err
			}
			until = *h.until
			return nil
		})
	case SlotPoll:
		_, err = l.st.UpdateJob(ctx, c.ID, func(x *store.Job) error {
			h := holder{&x.PollBy, &x.PollUntil}
			if err := h.renew(*c, l.now()); err != nil {
				return err
			}
			until = *h.until
			x.NextPoll = until
			return nil
		})
	default:
		err = fmt.Errorf("unknown slot %q", c.Slot)
	}
	if err != nil {
		return fmt.Errorf("renew %s claim of %s: %w", c.Slot, c.ID, err)
	}
	c.Until = until
	return nil
}

// Release gives c up so that another may take it at once; ErrLost if it
// was no longer the holder's. A submission claim is given up by EndSend.
func (l *Lifecycle) Release(ctx context.Context, c Claim) error {
	var err error
	switch c.Slot {
	case SlotReport:
		_, err = l.st.Update(ctx, c.ID, func(x *store.Request) error { return requestHolder(c.Slot, x).release(c) })
	case SlotPoll:
		_, err = l.st.UpdateJob(ctx, c.ID, func(x *store.Job) error { return holder{&x.PollBy, &x.PollUntil}.release(c) })
	default:
		err = fmt.Errorf("slot %q is not released on its own", c.Slot)
	}
	if err != nil {
		return fmt.Errorf("release %s claim of %s: %w", c.Slot, c.ID, err)
	}
	return nil
}
