package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// OpenPlans counts the plans of user (a Slack user ID) waiting for a
// decision (planned or awaiting approval) that expire after now. It reads
// only the user's entries of the open-plan index and decodes no record.
func (b *Bolt) OpenPlans(ctx context.Context, user string, now time.Time) (int, error) {
	n := 0
	err := b.view(ctx, func(tx *bolt.Tx) error {
		p := append([]byte(user), 0)
		c := tx.Bucket(bucketPlansByUser).Cursor()
		for k, _ := c.Seek(append(bytes.Clone(p), timeKey(now)...)); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
			if len(k) < len(p)+timeKeyLen {
				return fmt.Errorf("open-plan index entry %q: malformed", k)
			}
			if bytes.Compare(k[len(p):len(p)+timeKeyLen], timeKey(now)) > 0 {
				n++
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("count open plans of %s: %w", user, err)
	}
	return n, nil
}

// Due returns at most max requests (all, if max ≤ 0) whose DueAt is at or
// before now, earliest first: the work housekeeping has to do now. It
// reads only those requests, through the due index. A request stays due
// until a write moves its DueAt (a new state, WakeAt, a renewed lease).
func (b *Bolt) Due(ctx context.Context, now time.Time, max int) ([]Request, error) {
	var out []Request
	err := b.view(ctx, func(tx *bolt.Tx) error {
		return dueScan(tx.Bucket(bucketRequestsDue), now, max, func(id string) error {
			var r Request
			switch err := b.get(tx.Bucket(bucketRequests), id, &r); {
			case errors.Is(err, ErrNotFound):
				return nil // cannot happen while the index is exact
			case err != nil:
				return err
			}
			out = append(out, r)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list requests due by %s: %w", now.Format(time.RFC3339Nano), err)
	}
	return out, nil
}

// DueJobs returns at most max active jobs (all, if max ≤ 0) whose NextPoll
// is at or before now (a zero NextPoll: due at once), earliest first. It
// reads only those jobs, through the due-jobs index.
func (b *Bolt) DueJobs(ctx context.Context, now time.Time, max int) ([]Job, error) {
	var out []Job
	err := b.view(ctx, func(tx *bolt.Tx) error {
		return dueScan(tx.Bucket(bucketJobsDue), now, max, func(id string) error {
			var j Job
			switch err := b.get(tx.Bucket(bucketJobs), id, &j); {
			case errors.Is(err, ErrNotFound):
				return nil // cannot happen while the index is exact
			case err != nil:
				return err
			}
			out = append(out, j)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list jobs due by %s: %w", now.Format(time.RFC3339Nano), err)
	}
	return out, nil
}

// dueScan calls fn with the IDs of the entries of a due index (dueKey) at
// or before now, earliest first, at most max of them unless max ≤ 0.
func dueScan(bk *bolt.Bucket, now time.Time, max int, fn func(id string) error) error {
	limit := timeKey(now)
	c := bk.Cursor()
	n := 0
	for k, _ := c.First(); k != nil && (max <= 0 || n < max); k, _ = c.Next() {
		if len(k) < timeKeyLen {
			return fmt.Errorf("due index entry %q: malformed", k)
		}
		if bytes.Compare(k[:timeKeyLen], limit) > 0 {
			break
		}
		if err := fn(string(k[timeKeyLen:])); err != nil {
			return err
		}
		n++
	}
	return nil
}
