package patch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// Send is the right to send one wave of a request, held by the one caller
// that won it (Confirm, Approve, SendWave or Recover). Its holder re-checks
// the wave's instances (Recheck), then, batch by batch, calls BeginBatch,
// the batch API, and EndBatch with the answers; then EndSend. The claim
// must be renewed (Renew) at least every Claim.TTL meanwhile; once any of
// these returns ErrLost another process has taken the wave over and the
// holder must send, post and record nothing more.
type Send struct {
	RequestID string
	// Wave is the index of the wave to send, or -1 when none is due yet
	// (Confirm or Approve while every window is closed): the holder only
	// posts its messages and calls EndSend.
	Wave int
	// Batches are the wave's batches as planned.
	Batches []upgrade.Batch
	// Claim is the submission claim (SlotSubmit).
	Claim Claim
	// Recovered is set by Recover: what is known of the wave a stopped
	// sender left.
	Recovered *Recovery
	// Locked are the wave's instances another request held the lock of
	// when the wave was claimed (instance ID → the holder's request ID):
	// the holder of s must not send them (see claimMove).
	Locked map[string]string
}

// Recovery is what Recover found of a wave whose sender stopped.
type Recovery struct {
	// Answers are the answers implied by jobs recorded without one (the
	// sender stored the job, then stopped): record them with EndBatch.
	Answers []upgrade.UpgradeResult
	// Unknown are the instances of the batch that was in flight: the
	// patch may have started; never send them again.
	Unknown []string
	// Unsent are the wave's instances neither answered nor in flight:
	// never sent.
	Unsent []string
}

// claimSend claims the submission of x for s, with a fresh token, and
// starts wave s.Wave (if any) in ro, at now, by user.
func (l *Lifecycle) claimSend(s *Send, x *store.Request, ro *Rollout, user string, now time.Time) {
	if s.Claim.Token == "" {
		s.Claim = Claim{Slot: SlotSubmit, ID: x.ID, Token: newToken(), TTL: l.lease}
	}
	s.Claim.Until = now.Add(l.lease)
	x.Owner, x.LeaseUntil, x.InFlight = s.Claim.Token, s.Claim.Until, nil
	x.ResultsPending = s.Wave >= 0
	if s.Wave >= 0 {
		ro.Waves[s.Wave].Started, ro.Waves[s.Wave].By = now, user
	}
}

// withBatches fills in the batches of s's wave from r, as stored.
func (s *Send) withBatches(r store.Request) *Send {
	if ro, err := RolloutOf(r); err == nil && s.Wave >= 0 && s.Wave < len(ro.Waves) {
		s.Batches = ro.Waves[s.Wave].Batches
	}
	return s
}

// holding checks, inside a swap, that s still holds x's submission.
func holding(s *Send, x *store.Request) error {
	if x.State != store.Submitting || x.Owner != s.Claim.Token {
		return ErrLost
	}
	return nil
}

// answered returns the instances that have an answer in x.Results.
func answered(x store.Request) (map[string]bool, []upgrade.UpgradeResult, error) {
	var results []upgrade.UpgradeResult
	if len(x.Results) > 0 {
		if err := json.Unmarshal(x.Results, &results); err != nil {
			return nil, nil, fmt.Errorf("decode batch answers of request %s: %w", x.ID, err)
		}
	}
	done := map[string]bool{}
	for _, r := range results {
		done[r.InstanceID] = true
	}
	return done, results, nil
}

// BeginBatch records, under s's claim, that the batch of ids (instances of
// s's wave without an answer yet) is about to be sent, renewing the
// claim: should the holder stop during the call, Recover reports them as
// unknown, never as not sent. It returns ErrStopped when the request was
// told to stop (do not send; record the batch as not sent) and ErrLost
// when the claim was taken over (do nothing more).
func (l *Lifecycle) BeginBatch(ctx context.Context, s *Send, ids []string) error {
	var until time.Time
	// Durable: after a failover the batch must still be known in flight.
	_, err := l.update(store.WithDurable(ctx), "begin a batch of", s.RequestID, func(x *store.Request, ro *Rollout, now time.Time) error {
		if err := holding(s, x); err != nil {
			return err
		}
		if ro.Stopped != nil {
			return ErrStopped
		}
		if len(x.InFlight) > 0 {
			// The answers of the last batch were never recorded: whoever
			// takes over must report it as unknown, so nothing more goes.
			return ErrUnrecorded
		}
		if s.Wave < 0 || s.Wave >= len(ro.Waves) {
			return fmt.Errorf("the claim holds no wave")
		}
		done, _, err := answered(*x)
		if err != nil {
			return err
		}
		wave := ro.Waves[s.Wave].InstanceIDs()
		for _, id := range ids {
			if !slices.Contains(wave, id) || done[id] {
				return fmt.Errorf("instance %s is not an unanswered instance of wave %d", id, s.Wave)
			}
		}
		x.InFlight = slices.Clone(ids)
		until = now.Add(s.Claim.TTL)
		x.LeaseUntil = until
		return nil
	})
	if err != nil {
		return err
	}
	s.Claim.Until = until
	return nil
}

// ErrUnrecorded is BeginBatch's refusal while a batch is still recorded
// in flight: the answers of the last batch call were not recorded, so no
// further batch may be sent (a takeover reports that batch as unknown).
var ErrUnrecorded = errors.New("the answers of the last batch were not recorded")

// EndBatch records, under s's claim, the answers of the batch in flight
// (or of instances not sent), adding them to the request's Results (an
// instance's new answer replaces an older one) and clearing InFlight; it
// renews the claim. Record every job (PutJob) before: a job is then never
// lost, whoever reports it.
func (l *Lifecycle) EndBatch(ctx context.Context, s *Send, answers []upgrade.UpgradeResult) error {
	var until time.Time
	_, err := l.update(ctx, "record a batch of", s.RequestID, func(x *store.Request, _ *Rollout, now time.Time) error {
		if err := holding(s, x); err != nil {
			return err
		}
		_, results, err := answered(*x)
		if err != nil {
			return err
		}
		results = slices.DeleteFunc(results, func(old upgrade.UpgradeResult) bool {
			return slices.ContainsFunc(answers, func(a upgrade.UpgradeResult) bool { return a.InstanceID == old.InstanceID })
		})
		raw, err := json.Marshal(append(results, answers...))
		if err != nil {
			return fmt.Errorf("encode batch answers: %w", err)
		}
		x.Results, x.InFlight = raw, nil
		until = now.Add(s.Claim.TTL)
		x.LeaseUntil = until
		return nil
	})
	if err != nil {
		return err
	}
	s.Claim.Until = until
	return nil
}

// errStopRequested makes EndSend end in stopped instead of submitted.
var errStopRequested = errors.New("stop requested")

// EndSend ends s's sending: the wave is marked ended, the claim given up,
// and the request moves from submitting to submitted, or to stopped when it
// was told to stop meanwhile. It returns ErrLost if the claim was taken
// over.
func (l *Lifecycle) EndSend(ctx context.Context, s *Send) (store.Request, error) {
	end := func(stopped bool) mutation {
		return func(x *store.Request, ro *Rollout, now time.Time) error {
			if x.Owner != s.Claim.Token {
				return ErrLost
			}
			if (ro.Stopped != nil) != stopped {
				return errStopRequested
			}
			if s.Wave >= 0 && s.Wave < len(ro.Waves) {
				ro.Waves[s.Wave].Ended = now
			}
			x.Owner, x.LeaseUntil, x.InFlight = "", time.Time{}, nil
			return nil
		}
	}
	from := []store.State{store.Submitting}
	r, err := l.move(ctx, "end the send of", s.RequestID, from, store.Submitted, "", end(false))
	if errors.Is(err, errStopRequested) {
		r, err = l.move(ctx, "end the send of", s.RequestID, from, store.Stopped, "", end(true))
	}
	if _, ok := errors.AsType[*store.ConflictError](err); ok {
		// Not submitting any more: another process took over and ended it.
		return store.Request{}, fmt.Errorf("%w: %w", ErrLost, err)
	}
	return r, err
}

// Recover takes over the sending of a request left submitting by a holder
// whose claim ran out (a crashed process, a replica that died): of several
// callers one wins; the others get ErrHeld (or a *store.ConflictError once
// it is no longer submitting). The Send it returns says what is known of
// the wave (Recovered): the winner records the answers (Recovered.Answers,
// Unknown as unknown, Unsent as not sent) with EndBatch, never sending any
// of them, and calls EndSend.
func (l *Lifecycle) Recover(ctx context.Context, id string) (store.Request, *Send, error) {
	s := &Send{RequestID: id, Claim: Claim{Slot: SlotSubmit, ID: id, Token: newToken(), TTL: l.lease}}
	r, err := l.update(ctx, "recover", id, func(x *store.Request, ro *Rollout, now time.Time) error {
		if x.State != store.Submitting {
			return &store.ConflictError{ID: id, Want: []store.State{store.Submitting}, Got: x.State}
		}
		if end := leaseEnd(*x); now.Before(end) {
			return fmt.Errorf("%w until %s", ErrHeld, end.UTC().Format(time.RFC3339))
		}
		s.Wave = ro.Sending()
		s.Claim.Until = now.Add(l.lease)
		x.Owner, x.LeaseUntil = s.Claim.Token, s.Claim.Until
		x.ResultsPending = x.ResultsPending || s.Wave >= 0
		return nil
	})
	if err != nil {
		return store.Request{}, nil, err
	}
	s.withBatches(r)
	// Jobs are read after the claim: whatever the stopped holder recorded
	// before it is seen, and it can record nothing after.
	jobs, err := l.st.Jobs(ctx, id)
	if err != nil {
		return store.Request{}, nil, fmt.Errorf("recover request %s: %w", id, err)
	}
	done, _, err := answered(r)
	if err != nil {
		return store.Request{}, nil, fmt.Errorf("recover request %s: %w", id, err)
	}
	rec := &Recovery{}
	var wave []string
	for _, b := range s.Batches {
		wave = append(wave, b.InstanceIDs...)
	}
	for _, j := range jobs {
		if slices.Contains(wave, j.InstanceID) && !done[j.InstanceID] {
			rec.Answers = append(rec.Answers, upgrade.UpgradeResult{InstanceID: j.InstanceID, JobID: j.ID})
			done[j.InstanceID] = true
		}
	}
	for _, id := range wave {
		switch {
		case done[id]:
		case slices.Contains(r.InFlight, id):
			rec.Unknown = append(rec.Unknown, id)
		default:
			rec.Unsent = append(rec.Unsent, id)
		}
	}
	s.Recovered = rec
	return r, s, nil
}

// leaseEnd is when r's submission claim runs out; one written without an
// expiry counts as run out at its last update.
func leaseEnd(r store.Request) time.Time {
	if r.LeaseUntil.IsZero() {
		return r.UpdatedAt
	}
	return r.LeaseUntil
}
