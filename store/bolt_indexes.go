package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// More buckets (see the list in bolt.go). Indexes, with empty values,
// written in the same transaction as the records:
//
//   - plansByUser: plansKey(requester, ExpiresAt, ID) for every plan waiting
//     for a decision, so that OpenPlans counts one person's plans without
//     decoding any;
//   - requestsDue: dueKey(DueAt, ID) for every request with a DueAt, so
//     that Due reads only the requests whose time has come;
//   - jobsDue: dueKey(NextPoll, ID) for every active job, so that DueJobs
//     reads only the jobs due to be read.
//
// And the instance locks, which are records, not indexes (they are never
// rebuilt): locks holds key → the ID of the request holding it;
// locksByRequest holds indexKey(request ID, key) for each, so that a
// request's locks are a prefix scan.
var (
	bucketPlansByUser    = []byte("plans_by_user")
	bucketRequestsDue    = []byte("requests_due")
	bucketJobsDue        = []byte("jobs_due")
	bucketLocks          = []byte("locks")
	bucketLocksByRequest = []byte("locks_by_request")
	lockBuckets          = [][]byte{bucketLocks, bucketLocksByRequest}
)

// recordIndex is one index of the records of type T: the bucket, and the
// key of a record (its ID given apart) in it, or nil when the record is
// not in that index.
type recordIndex[T any] struct {
	bucket []byte
	key    func(id string, v *T) []byte
}

// requestIndexes are the indexes of the requests.
var requestIndexes = []recordIndex[Request]{
	{bucketRequestsByState, func(id string, r *Request) []byte { return stateKey(r.State, r.UpdatedAt, id) }},
	{bucketPlansByUser, func(id string, r *Request) []byte {
		if !openPlan(*r) {
			return nil
		}
		return plansKey(r.Requester, r.ExpiresAt, id)
	}},
	{bucketRequestsDue, func(id string, r *Request) []byte {
		t := DueAt(*r)
		if t.IsZero() {
			return nil
		}
		return dueKey(t, id)
	}},
}

// jobIndexes are the indexes of the jobs.
var jobIndexes = []recordIndex[Job]{
	{bucketJobsByRequest, func(id string, j *Job) []byte { return indexKey(j.RequestID, id) }},
	{bucketJobsActive, func(id string, j *Job) []byte {
		if !j.Active() {
			return nil
		}
		return []byte(id)
	}},
	{bucketJobsDue, func(id string, j *Job) []byte {
		t, ok := jobDue(*j)
		if !ok {
			return nil
		}
		return dueKey(t, id)
	}},
}

// reindex moves the entries of record id from what they were for old (nil
// for a new record) to what they are for v (nil for a deleted record).
func reindex[T any](tx *bolt.Tx, indexes []recordIndex[T], id string, old, v *T) error {
	for _, idx := range indexes {
		var was, is []byte
		if old != nil {
			was = idx.key(id, old)
		}
		if v != nil {
			is = idx.key(id, v)
		}
		if bytes.Equal(was, is) && was != nil {
			continue
		}
		b := tx.Bucket(idx.bucket)
		if was != nil {
			if err := b.Delete(was); err != nil {
				return fmt.Errorf("index %s: %w", idx.bucket, err)
			}
		}
		if is != nil {
			if err := b.Put(is, nil); err != nil {
				return fmt.Errorf("index %s: %w", idx.bucket, err)
			}
		}
	}
	return nil
}

// indexChecker tells, record by record, whether the indexes of T match
// the records: every record's entries exist, and no index holds more
// entries than the records give it.
type indexChecker[T any] struct {
	indexes []recordIndex[T]
	want    []int // entries the records give each index
	stale   bool
}

// check looks at the entries of record id, v.
func (c *indexChecker[T]) check(tx *bolt.Tx, id string, v *T) {
	if c.want == nil {
		c.want = make([]int, len(c.indexes))
	}
	for i, idx := range c.indexes {
		k := idx.key(id, v)
		if k == nil {
			continue
		}
		c.want[i]++
		if b := tx.Bucket(idx.bucket); b == nil || b.Get(k) == nil {
			c.stale = true
		}
	}
}

// done reports whether the indexes are stale.
func (c *indexChecker[T]) done(tx *bolt.Tx) bool {
	for i, idx := range c.indexes {
		b := tx.Bucket(idx.bucket)
		if b == nil {
			return true
		}
		want := 0
		if c.want != nil {
			want = c.want[i]
		}
		if keyCount(b) != want {
			return true
		}
	}
	return c.stale
}

// indexAll fills the (empty) indexes from the requests and jobs, indexed
// under the keys they are stored under.
func indexAll(tx *bolt.Tx) error {
	err := tx.Bucket(bucketRequests).ForEach(func(k, v []byte) error {
		var r Request
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("decode request %q: %w", k, err)
		}
		return reindex(tx, requestIndexes, string(k), nil, &r)
	})
	if err != nil {
		return err
	}
	return tx.Bucket(bucketJobs).ForEach(func(k, v []byte) error {
		var j Job
		if err := json.Unmarshal(v, &j); err != nil {
			return fmt.Errorf("decode job %q: %w", k, err)
		}
		return reindex(tx, jobIndexes, string(k), nil, &j)
	})
}

// plansKey is the key of an open plan in bucketPlansByUser: the requester,
// a zero byte, timeKey(expires), the ID. One person's plans sort by
// expiry.
func plansKey(requester string, expires time.Time, id string) []byte {
	k := append([]byte(requester), 0)
	k = append(k, timeKey(expires)...)
	return append(k, id...)
}

// dueKey is the key of a record due at t in bucketRequestsDue or
// bucketJobsDue: timeKey(t), the ID.
func dueKey(t time.Time, id string) []byte {
	return append(timeKey(t), id...)
}
