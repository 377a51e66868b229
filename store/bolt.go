package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime/debug"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Bucket names. Jobs are kept by ID; jobsByRequest holds empty values under
// the key requestID + "\x00" + jobID so that Jobs(requestID) is a prefix scan.
// limits and seen hold the records of Allow and Remember by key; expiries
// indexes both by when they expire (see expiryKey), so that expired ones can
// be deleted oldest first. Buckets added after a file was made are created
// when it is opened.
var (
	bucketMeta          = []byte("meta")
	bucketRequests      = []byte("requests")
	bucketJobs          = []byte("jobs")
	bucketJobsByRequest = []byte("jobs_by_request")
	bucketLimits        = []byte("limits")
	bucketSeen          = []byte("seen")
	bucketExpiries      = []byte("expiries")
	allBuckets          = [][]byte{bucketMeta, bucketRequests, bucketJobs, bucketJobsByRequest, bucketLimits, bucketSeen, bucketExpiries}

	keySchema = []byte("schema")
)

// schemaVersion is written into the meta bucket of a new file.
const schemaVersion = "1"

// DefaultLockTimeout is how long Open waits for a file another process (or
// another Bolt in this one) holds.
const DefaultLockTimeout = time.Second

// Options tune OpenWith. The zero value gives the behaviour of Open.
type Options struct {
	// LockTimeout is how long to wait for the file lock; 0 means
	// DefaultLockTimeout.
	LockTimeout time.Duration
	// Now returns the current time for CreatedAt, UpdatedAt and events;
	// nil means time.Now. Tests inject a fixed clock here.
	Now func() time.Time
}

// Bolt is the store in one bbolt file. It is safe for concurrent use.
type Bolt struct {
	db   *bolt.DB
	path string
	now  func() time.Time
}

// Open opens the store file at path with default Options. See OpenWith.
func Open(path string) (*Bolt, error) {
	return OpenWith(path, Options{})
}

// OpenWith opens the store file at path, creating it (mode 0600) and its
// buckets if it does not exist. An existing empty file is initialised like a
// new one, since it holds nothing to lose.
//
// An existing file is checked before it is opened for writing: if it is not
// a bbolt file, is truncated, fails bbolt's consistency check or holds a
// record that is not valid JSON, OpenWith returns an error and leaves the
// file exactly as it was, so the operator can restore or inspect it. If
// another process holds the file, OpenWith gives up after LockTimeout with an
// error saying the file is in use.
func OpenWith(path string, opts Options) (*Bolt, error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = DefaultLockTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// A new store.
	case err != nil:
		return nil, fmt.Errorf("open store %s: %w", path, err)
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("open store %s: not a regular file (mode %s)", path, fi.Mode())
	case fi.Size() > 0:
		if err := verify(path, fi.Size(), opts.LockTimeout); err != nil {
			return nil, fmt.Errorf("open store %s: %w", path, err)
		}
	}

	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout})
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, describeOpenError(err, opts.LockTimeout))
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		if meta.Get(keySchema) == nil {
			return meta.Put(keySchema, []byte(schemaVersion))
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return &Bolt{db: db, path: path, now: opts.Now}, nil
}

// describeOpenError turns bbolt's open errors into ones an operator can act
// on.
func describeOpenError(err error, timeout time.Duration) error {
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return fmt.Errorf("the file is in use by another process (no lock within %v); stop it or use another BOT_STORE: %w", timeout, err)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
		return damaged(err)
	}
	return err
}

// damaged wraps err to say the file is damaged and was left alone.
func damaged(err error) error {
	return fmt.Errorf("the file is damaged or not a bbolt database, and was left untouched; restore it from a backup or move it away: %w", err)
}

// verify checks an existing, non-empty file without writing to it: opened
// read-only (a shared lock, so a holder of the file makes it time out), the
// data its meta page refers to must lie within the file, bbolt's consistency
// check must pass and every record must decode. Opening a damaged file for
// writing could make bbolt extend or rewrite it, or fault on pages past its
// end, which is why this is done first.
func verify(path string, size int64, timeout time.Duration) (err error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: timeout})
	switch {
	case errors.Is(err, berrors.ErrTimeout), errors.Is(err, fs.ErrPermission):
		return describeOpenError(err, timeout)
	case err != nil:
		// Anything else bbolt refuses in a non-empty file ("file size too
		// small", bad meta pages) is damage.
		return damaged(err)
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		if need := tx.Size(); need > size {
			return damaged(fmt.Errorf("truncated: the file has %d bytes but its data reaches to byte %d", size, need))
		}
		if err := walk(tx); errors.Is(err, errForeign) {
			return fmt.Errorf("%w; it was left untouched, use another BOT_STORE", err)
		} else if err != nil {
			return damaged(err)
		}
		// Drain the channel so that Check's goroutine ends; report the first
		// problem and how many there were.
		var first error
		n := 0
		for err := range tx.Check() {
			if first == nil {
				first = err
			}
			n++
		}
		if first != nil {
			return damaged(fmt.Errorf("consistency check found %d problems, the first: %w", n, first))
		}
		return nil
	})
}

// errForeign means the file is a bbolt database of some other program.
var errForeign = errors.New("not a geminidb-patch-bot store")

// walk reads every record of every known bucket and decodes it. Damage that
// points bbolt at memory outside the file would otherwise crash the process;
// SetPanicOnFault turns that into a panic, which walk recovers as an error.
func walk(tx *bolt.Tx) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("reading the file failed: %v", r)
		}
	}()
	var foreign []string
	err = tx.ForEach(func(name []byte, b *bolt.Bucket) error {
		switch {
		case bytes.Equal(name, bucketRequests):
			return b.ForEach(func(k, v []byte) error {
				var r Request
				if err := json.Unmarshal(v, &r); err != nil {
					return fmt.Errorf("request %q: %w", k, err)
				}
				return nil
			})
		case bytes.Equal(name, bucketJobs):
			return b.ForEach(func(k, v []byte) error {
				var j Job
				if err := json.Unmarshal(v, &j); err != nil {
					return fmt.Errorf("job %q: %w", k, err)
				}
				return nil
			})
		case bytes.Equal(name, bucketLimits):
			return b.ForEach(func(k, v []byte) error {
				var r limitRecord
				if err := json.Unmarshal(v, &r); err != nil {
					return fmt.Errorf("limit %q: %w", k, err)
				}
				return nil
			})
		case bytes.Equal(name, bucketSeen):
			return b.ForEach(func(k, v []byte) error {
				var r seenRecord
				if err := json.Unmarshal(v, &r); err != nil {
					return fmt.Errorf("seen %q: %w", k, err)
				}
				return nil
			})
		case bytes.Equal(name, bucketExpiries):
			return b.ForEach(func(k, v []byte) error {
				if len(k) <= expiryKeyHeader || expiringBucket(k[8]) == nil {
					return fmt.Errorf("expiry index entry %q: malformed", k)
				}
				return nil
			})
		case bytes.Equal(name, bucketMeta), bytes.Equal(name, bucketJobsByRequest):
			return b.ForEach(func(k, v []byte) error { return nil })
		}
		foreign = append(foreign, string(name))
		return nil
	})
	if err == nil && len(foreign) > 0 && tx.Bucket(bucketMeta) == nil {
		err = fmt.Errorf("%w: it has buckets %q", errForeign, foreign)
	}
	return err
}

// Close closes the file. The Bolt must not be used afterwards.
func (b *Bolt) Close() error {
	if err := b.db.Close(); err != nil {
		return fmt.Errorf("close store %s: %w", b.path, err)
	}
	return nil
}

// Path returns the path of the file.
func (b *Bolt) Path() string { return b.path }

// Ping reports whether the store is open and readable, for a readiness
// probe.
func (b *Bolt) Ping() error {
	err := b.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketRequests) == nil {
			return errors.New("bucket requests is missing")
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ping store %s: %w", b.path, err)
	}
	return nil
}

// Create stores a new request. It sets CreatedAt and UpdatedAt to now when
// they are zero, and returns an error wrapping ErrExists if the ID is taken.
func (b *Bolt) Create(r Request) error {
	if err := prepareCreate(&r, b.now); err != nil {
		return err
	}
	err := b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketRequests)
		if bk.Get([]byte(r.ID)) != nil {
			return ErrExists
		}
		_, err := putJSON(bk, r.ID, r)
		return err
	})
	if err != nil {
		return fmt.Errorf("create request %s: %w", r.ID, err)
	}
	return nil
}

// Get returns the request with the given ID, or an error wrapping
// ErrNotFound.
func (b *Bolt) Get(id string) (Request, error) {
	var r Request
	err := b.db.View(func(tx *bolt.Tx) error {
		return getJSON(tx.Bucket(bucketRequests), id, &r)
	})
	if err != nil {
		return Request{}, fmt.Errorf("get request %s: %w", id, err)
	}
	return r, nil
}

// Transition moves request id from one of the states in from to state to,
// atomically: if the request is in none of them, it returns a *ConflictError
// (errors.Is ErrConflict) and changes nothing. Otherwise it applies mutate
// (which may be nil, and cannot change the ID), sets State, appends an Event
// by user, sets UpdatedAt and saves, all in one write transaction, and
// returns the request as stored.
func (b *Bolt) Transition(id string, from []State, to State, user string, mutate func(*Request)) (Request, error) {
	if err := checkTransition(id, from, to); err != nil {
		return Request{}, err
	}
	var out Request
	err := b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketRequests)
		var r Request
		if err := getJSON(bk, id, &r); err != nil {
			return fmt.Errorf("transition request %s: %w", id, err)
		}
		if err := applyTransition(&r, id, from, to, user, b.now, mutate); err != nil {
			return err
		}
		data, err := putJSON(bk, id, r)
		if err != nil {
			return fmt.Errorf("transition request %s: %w", id, err)
		}
		return json.Unmarshal(data, &out)
	})
	if err != nil {
		return Request{}, err
	}
	return out, nil
}

// Update changes request id without changing its state: mutate's error
// aborts and is returned wrapped; mutate may not change ID or State (use
// Transition). It sets UpdatedAt and returns the request as stored.
func (b *Bolt) Update(id string, mutate func(*Request) error) (Request, error) {
	var out Request
	err := b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketRequests)
		var r Request
		if err := getJSON(bk, id, &r); err != nil {
			return err
		}
		if err := applyUpdate(&r, id, b.now, mutate); err != nil {
			return err
		}
		data, err := putJSON(bk, id, r)
		if err != nil {
			return err
		}
		return json.Unmarshal(data, &out)
	})
	if err != nil {
		return Request{}, fmt.Errorf("update request %s: %w", id, err)
	}
	return out, nil
}

// List returns the requests in any of the given states, or all requests when
// none is given, ordered by CreatedAt (then ID).
func (b *Bolt) List(states ...State) ([]Request, error) {
	var out []Request
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRequests).ForEach(func(k, v []byte) error {
			var r Request
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("decode request %q: %w", k, err)
			}
			if len(states) == 0 || slices.Contains(states, r.State) {
				out = append(out, r)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list requests: %w", err)
	}
	sortRequests(out)
	return out, nil
}

// PutJob stores j, replacing any job with the same ID.
func (b *Bolt) PutJob(j Job) error {
	if j.ID == "" {
		return errors.New("put job: empty ID")
	}
	err := b.db.Update(func(tx *bolt.Tx) error {
		return putJob(tx, j)
	})
	if err != nil {
		return fmt.Errorf("put job %s: %w", j.ID, err)
	}
	return nil
}

// putJob saves j and keeps the by-request index in step.
func putJob(tx *bolt.Tx, j Job) error {
	jobs, idx := tx.Bucket(bucketJobs), tx.Bucket(bucketJobsByRequest)
	var old Job
	switch err := getJSON(jobs, j.ID, &old); {
	case err == nil:
		if err := idx.Delete(indexKey(old.RequestID, old.ID)); err != nil {
			return err
		}
	case !errors.Is(err, ErrNotFound):
		return err
	}
	if _, err := putJSON(jobs, j.ID, j); err != nil {
		return err
	}
	return idx.Put(indexKey(j.RequestID, j.ID), nil)
}

// indexKey is the key of a job in bucketJobsByRequest.
func indexKey(requestID, jobID string) []byte {
	return []byte(requestID + "\x00" + jobID)
}

// Job returns the job with the given ID, or an error wrapping ErrNotFound.
func (b *Bolt) Job(id string) (Job, error) {
	var j Job
	err := b.db.View(func(tx *bolt.Tx) error {
		return getJSON(tx.Bucket(bucketJobs), id, &j)
	})
	if err != nil {
		return Job{}, fmt.Errorf("get job %s: %w", id, err)
	}
	return j, nil
}

// UpdateJob reads job id, applies mutate and saves the result in one write
// transaction, and returns the job as stored. If mutate returns an error,
// nothing is saved and the error is returned wrapped, so a caller can use a
// sentinel such as "already reported" to learn that another goroutine or
// replica got there first. mutate may not change the ID.
func (b *Bolt) UpdateJob(id string, mutate func(*Job) error) (Job, error) {
	var out Job
	err := b.db.Update(func(tx *bolt.Tx) error {
		var j Job
		if err := getJSON(tx.Bucket(bucketJobs), id, &j); err != nil {
			return err
		}
		if err := applyJobUpdate(&j, id, mutate); err != nil {
			return err
		}
		if err := putJob(tx, j); err != nil {
			return err
		}
		return getJSON(tx.Bucket(bucketJobs), id, &out)
	})
	if err != nil {
		return Job{}, fmt.Errorf("update job %s: %w", id, err)
	}
	return out, nil
}

// Jobs returns the jobs of request requestID, ordered by SubmittedAt, then
// ID.
func (b *Bolt) Jobs(requestID string) ([]Job, error) {
	var out []Job
	err := b.db.View(func(tx *bolt.Tx) error {
		jobs := tx.Bucket(bucketJobs)
		prefix := indexKey(requestID, "")
		c := tx.Bucket(bucketJobsByRequest).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			var j Job
			if err := getJSON(jobs, string(k[len(prefix):]), &j); err != nil {
				return err
			}
			out = append(out, j)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list jobs of request %s: %w", requestID, err)
	}
	sortJobs(out)
	return out, nil
}

// ActiveJobs returns the jobs still followed (see Job.Active), ordered by
// SubmittedAt, then ID.
func (b *Bolt) ActiveJobs() ([]Job, error) {
	var out []Job
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketJobs).ForEach(func(k, v []byte) error {
			var j Job
			if err := json.Unmarshal(v, &j); err != nil {
				return fmt.Errorf("decode job %q: %w", k, err)
			}
			if j.Active() {
				out = append(out, j)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list active jobs: %w", err)
	}
	sortJobs(out)
	return out, nil
}

// getJSON decodes the value under key into v, or returns ErrNotFound.
func getJSON(bk *bolt.Bucket, key string, v any) error {
	data := bk.Get([]byte(key))
	if data == nil {
		return ErrNotFound
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decode %q: %w", key, err)
	}
	return nil
}

// putJSON encodes v and stores it under key; it returns the encoding.
func putJSON(bk *bolt.Bucket, key string, v any) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %q: %w", key, err)
	}
	if err := bk.Put([]byte(key), data); err != nil {
		return nil, fmt.Errorf("save %q: %w", key, err)
	}
	return data, nil
}

// Allow records one hit for key and reports whether it is within limit hits
// per window. Windows are fixed, not sliding and not aligned to the clock:
// a window starts at the first hit after the previous one ended (or the
// first hit ever) and lasts the window given at that hit. Only allowed hits
// are counted; a refused hit changes nothing, in particular it does not
// extend the window. The read, the decision and the write are one write
// transaction, so concurrent calls never allow more than limit hits per
// window. Time comes from Options.Now.
//
// An empty key, a limit below 1 or a window of 0 or less is an error.
// Records of ended windows are deleted a few at a time by later calls of
// Allow and Remember.
func (b *Bolt) Allow(key string, limit int, window time.Duration) (bool, error) {
	if err := checkAllow(key, limit, window); err != nil {
		return false, fmt.Errorf("allow %q: %w", key, err)
	}
	var allowed bool
	err := b.db.Update(func(tx *bolt.Tx) error {
		now := b.now()
		if err := pruneExpired(tx, now); err != nil {
			return err
		}
		var rec limitRecord
		found, err := getRecord(tx.Bucket(bucketLimits), key, &rec)
		if err != nil {
			return err
		}
		old := rec.End
		var save bool
		allowed, save = applyHit(&rec, found, limit, window, now)
		if !save {
			return nil
		}
		return putExpiring(tx, kindLimit, key, found, old, rec.End, rec)
	})
	if err != nil {
		return false, fmt.Errorf("allow %q: %w", key, err)
	}
	return allowed, nil
}

// Remember reports whether key is new: true the first time it is seen, and
// again once ttl has passed since the call that last returned true; false
// for every call in between (which does not extend the ttl). The check and
// the write are one write transaction, so of concurrent calls for a new key
// exactly one returns true. Time comes from Options.Now.
//
// An empty key or a ttl of 0 or less is an error. Expired keys are deleted
// a few at a time by later calls of Allow and Remember.
func (b *Bolt) Remember(key string, ttl time.Duration) (bool, error) {
	if err := checkRemember(key, ttl); err != nil {
		return false, fmt.Errorf("remember %q: %w", key, err)
	}
	var isNew bool
	err := b.db.Update(func(tx *bolt.Tx) error {
		now := b.now()
		if err := pruneExpired(tx, now); err != nil {
			return err
		}
		var rec seenRecord
		found, err := getRecord(tx.Bucket(bucketSeen), key, &rec)
		if err != nil {
			return err
		}
		old := rec.Until
		if isNew = applySeen(&rec, found, ttl, now); !isNew {
			return nil
		}
		return putExpiring(tx, kindSeen, key, found, old, rec.Until, rec)
	})
	if err != nil {
		return false, fmt.Errorf("remember %q: %w", key, err)
	}
	return isNew, nil
}

// The kinds of record in the expiry index.
const (
	kindLimit byte = 'l' // in bucketLimits
	kindSeen  byte = 's' // in bucketSeen
)

// pruneBatch is how many expired records one Allow or Remember deletes at
// most, which bounds its work; since each call adds at most one record,
// expired ones cannot pile up.
const pruneBatch = 64

// expiryKeyHeader is the length of an expiry index key before the record's
// key.
const expiryKeyHeader = 9

// expiryKey is the key in bucketExpiries of the record key of the given
// kind that expires at until: until in Unix nanoseconds as a big-endian
// uint64 with the sign bit flipped (so that keys sort by time), the kind,
// then key. Its value is empty.
func expiryKey(until time.Time, kind byte, key string) []byte {
	k := make([]byte, expiryKeyHeader, expiryKeyHeader+len(key))
	binary.BigEndian.PutUint64(k, uint64(until.UnixNano())^(1<<63))
	k[8] = kind
	return append(k, key...)
}

// expiringBucket returns the name of the bucket of records of kind, or nil
// for an unknown kind.
func expiringBucket(kind byte) []byte {
	switch kind {
	case kindLimit:
		return bucketLimits
	case kindSeen:
		return bucketSeen
	}
	return nil
}

// getRecord decodes the record under key into v and reports whether there
// was one.
func getRecord(bk *bolt.Bucket, key string, v any) (bool, error) {
	switch err := getJSON(bk, key, v); {
	case errors.Is(err, ErrNotFound):
		return false, nil
	case err != nil:
		return false, err
	}
	return true, nil
}

// putExpiring saves rec, a record of kind expiring at until, under key, and
// moves its entry in the expiry index from old (its previous expiry, if
// found) to until.
func putExpiring(tx *bolt.Tx, kind byte, key string, found bool, old, until time.Time, rec any) error {
	idx := tx.Bucket(bucketExpiries)
	if found {
		if err := idx.Delete(expiryKey(old, kind, key)); err != nil {
			return err
		}
	}
	if _, err := putJSON(tx.Bucket(expiringBucket(kind)), key, rec); err != nil {
		return err
	}
	return idx.Put(expiryKey(until, kind, key), nil)
}

// pruneExpired deletes up to pruneBatch records that expired at or before
// now, oldest first, with their index entries.
func pruneExpired(tx *bolt.Tx, now time.Time) error {
	idx := tx.Bucket(bucketExpiries)
	stamp := expiryKey(now, 0, "")[:8]
	var expired [][]byte
	c := idx.Cursor()
	for k, _ := c.First(); k != nil && len(expired) < pruneBatch; k, _ = c.Next() {
		if len(k) >= 8 && bytes.Compare(k[:8], stamp) > 0 {
			break
		}
		expired = append(expired, bytes.Clone(k))
	}
	for _, k := range expired {
		if len(k) > expiryKeyHeader {
			if name := expiringBucket(k[8]); name != nil {
				if err := tx.Bucket(name).Delete(k[expiryKeyHeader:]); err != nil {
					return fmt.Errorf("prune %q: %w", k[expiryKeyHeader:], err)
				}
			}
		}
		if err := idx.Delete(k); err != nil {
			return fmt.Errorf("prune %q: %w", k, err)
		}
	}
	return nil
}
