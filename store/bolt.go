package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Bucket names. Records: requests and jobs, by ID. Indexes, written in the
// same transaction as the records they index, with empty values:
//
//   - requestsByState: stateKey(state, UpdatedAt, ID) for every request, so
//     that List(states...) reads only the requests in those states and Prune
//     only the oldest requests in final states;
//   - jobsByRequest: indexKey(requestID, jobID) for every job, so that
//     Jobs(requestID) is a prefix scan;
//   - jobsActive: the ID of every job that is Active, for ActiveJobs.
//
// Buckets added after a file was made are created when it is opened, and
// indexes that do not match the records are rebuilt then (see OpenWith).
var (
	bucketMeta            = []byte("meta")
	bucketRequests        = []byte("requests")
	bucketJobs            = []byte("jobs")
	bucketRequestsByState = []byte("requests_by_state")
	bucketJobsByRequest   = []byte("jobs_by_request")
	bucketJobsActive      = []byte("jobs_active")
	allBuckets            = [][]byte{bucketMeta, bucketRequests, bucketJobs, bucketRequestsByState, bucketJobsByRequest, bucketJobsActive, bucketPlansByUser, bucketRequestsDue, bucketJobsDue, bucketLocks, bucketLocksByRequest}
	indexBuckets          = [][]byte{bucketRequestsByState, bucketJobsByRequest, bucketJobsActive, bucketPlansByUser, bucketRequestsDue, bucketJobsDue}

	// legacyBuckets held the state of Allow and Remember in schema 1, which
	// now lives in memory; opening a file deletes them.
	legacyBuckets = [][]byte{[]byte("limits"), []byte("seen"), []byte("expiries")}

	keySchema = []byte("schema")
)

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

// Bolt is the store in one bbolt file, which one process at a time holds
// (a file lock). It is safe for concurrent use.
//
// Writes (Create, Transition, Update, PutJob, UpdateJob) that arrive while
// another commits share the next transaction, and so one commit and one
// fsync (see committer); a write alone commits at once. Because a shared
// transaction is re-run without a member whose write failed, the mutate
// functions given to Transition, Update and UpdateJob may run more than
// once, each time on a freshly read record; they should change only the
// record they are given (as with Redis).
//
// The Create of a plan waiting for a decision commits without waiting for
// fsync when every write of its group is such a Create (see the package
// doc for what a crash can lose); WithDurable makes it sync.
//
// The state of Allow and Remember is kept in memory, not in the file: it
// only guards against bursts and redeliveries over seconds or minutes, which
// a restart ends anyway, and keeping it in memory saves two commits per
// command.
type Bolt struct {
	fence    // tripped by a write that finds a newer schema
	replicas selfRegistry
	db       *bolt.DB
	path     string
	now      func() time.Time
	decodes  decodeCounter
	limits   *memo[limitRecord]
	seen     *memo[seenRecord]
	commits  *committer
	// writeVia, when set, runs the writes instead of commits: benchmarks
	// compare with db.Update (every write alone) and db.Batch.
	writeVia func(func(*bolt.Tx) error) error
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
// a bbolt file, is truncated, fails bbolt's consistency check, holds a
// record that is not valid JSON or was written by a newer version of this
// program, OpenWith returns an error and leaves the file exactly as it was,
// so the operator can restore or inspect it. If another process holds the
// file, OpenWith gives up after LockTimeout with an error saying the file is
// in use.
//
// The check reads every record, and with it OpenWith checks the indexes: if
// they do not match the records (a file written before they existed, or
// written since by an older version of the program), they are rebuilt from
// the records before OpenWith returns. Buckets an older version used for
// Allow and Remember are deleted.
func OpenWith(path string, opts Options) (*Bolt, error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = DefaultLockTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	stale := false
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// A new store.
	case err != nil:
		return nil, fmt.Errorf("open store %s: %w", path, err)
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("open store %s: not a regular file (mode %s)", path, fi.Mode())
	case fi.Size() > 0:
		if stale, err = verify(path, fi.Size(), opts.LockTimeout); err != nil {
			return nil, fmt.Errorf("open store %s: %w", path, err)
		}
	}

	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout})
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, describeOpenError(err, opts.LockTimeout))
	}
	if err := db.Update(func(tx *bolt.Tx) error { return prepare(tx, stale) }); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return &Bolt{
		db:      db,
		path:    path,
		now:     opts.Now,
		limits:  newMemo[limitRecord](defaultMemoKeys),
		seen:    newMemo[seenRecord](defaultMemoKeys),
		commits: &committer{db: db},
	}, nil
}

// prepare brings an opened file to the current schema: it refuses one from
// a newer version, creates missing buckets, deletes the legacy ones and
// rebuilds the indexes when stale is set or the file predates them.
func prepare(tx *bolt.Tx, stale bool) error {
	if meta := tx.Bucket(bucketMeta); meta != nil {
		switch v := string(meta.Get(keySchema)); v {
		case schemaVersion, schemaVersion2:
			// 2 → 3 changes no layout: the bump keeps releases of schema 2
			// from opening a file that holds rollouts they would misread.
		case "", schemaVersion1:
			stale = true
		default:
			return fmt.Errorf("%w; it was written by a newer version of the bot and was left untouched, run that version or use another BOT_STORE", &SchemaError{Where: "the file's meta bucket", Found: v, Want: schemaVersion})
		}
	}
	for _, name := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	for _, name := range legacyBuckets {
		if tx.Bucket(name) == nil {
			continue
		}
		if err := tx.DeleteBucket(name); err != nil {
			return fmt.Errorf("delete bucket %s: %w", name, err)
		}
	}
	if stale {
		if err := rebuildIndexes(tx); err != nil {
			return fmt.Errorf("rebuild indexes: %w", err)
		}
	}
	meta := tx.Bucket(bucketMeta)
	if string(meta.Get(keySchema)) != schemaVersion {
		return meta.Put(keySchema, []byte(schemaVersion))
	}
	return nil
}

// rebuildIndexes empties the index buckets and fills them again from the
// requests and jobs, indexed under the keys they are stored under.
func rebuildIndexes(tx *bolt.Tx) error {
	for _, name := range indexBuckets {
		if err := tx.DeleteBucket(name); err != nil {
			return fmt.Errorf("delete bucket %s: %w", name, err)
		}
		if _, err := tx.CreateBucket(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	return indexAll(tx)
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
// end, which is why this is done first. It also reports whether the indexes
// are stale: missing, or not matching the records.
func verify(path string, size int64, timeout time.Duration) (stale bool, err error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: timeout})
	switch {
	case errors.Is(err, berrors.ErrTimeout), errors.Is(err, fs.ErrPermission):
		return false, describeOpenError(err, timeout)
	case err != nil:
		// Anything else bbolt refuses in a non-empty file ("file size too
		// small", bad meta pages) is damage.
		return false, damaged(err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		if need := tx.Size(); need > size {
			return damaged(fmt.Errorf("truncated: the file has %d bytes but its data reaches to byte %d", size, need))
		}
		var err error
		if stale, err = walk(tx); errors.Is(err, errForeign) {
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
	return stale, err
}

// errForeign means the file is a bbolt database of some other program.
var errForeign = errors.New("not a geminidb-patch-bot store")

// walk reads every record of every known bucket and decodes it, and
// reports whether the indexes are stale: an index bucket is missing, a
// record lacks its index entry, or an index has more entries than records.
// Damage that points bbolt at memory outside the file would otherwise crash
// the process; SetPanicOnFault turns that into a panic, which walk recovers
// as an error.
func walk(tx *bolt.Tx) (stale bool, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("reading the file failed: %v", r)
		}
	}()
	reqs := indexChecker[Request]{indexes: requestIndexes}
	jobs := indexChecker[Job]{indexes: jobIndexes}
	var foreign []string
	err = tx.ForEach(func(name []byte, b *bolt.Bucket) error {
		switch {
		case bytes.Equal(name, bucketRequests):
			return b.ForEach(func(k, v []byte) error {
				var r Request
				if err := json.Unmarshal(v, &r); err != nil {
					return fmt.Errorf("request %q: %w", k, err)
				}
				reqs.check(tx, string(k), &r)
				return nil
			})
		case bytes.Equal(name, bucketJobs):
			return b.ForEach(func(k, v []byte) error {
				var j Job
				if err := json.Unmarshal(v, &j); err != nil {
					return fmt.Errorf("job %q: %w", k, err)
				}
				jobs.check(tx, string(k), &j)
				return nil
			})
		case bytes.Equal(name, bucketMeta), isIndexOrLegacy(name):
			return b.ForEach(func(k, v []byte) error { return nil })
		}
		foreign = append(foreign, string(name))
		return nil
	})
	if err == nil && len(foreign) > 0 && tx.Bucket(bucketMeta) == nil {
		err = fmt.Errorf("%w: it has buckets %q", errForeign, foreign)
	}
	if err != nil {
		return false, err
	}
	// Every record has its entries; more entries than records give means
	// stale ones.
	stale = reqs.done(tx)
	stale = jobs.done(tx) || stale
	return stale, nil
}

// isIndexOrLegacy reports whether name is an index bucket, a lock bucket
// or a legacy one.
func isIndexOrLegacy(name []byte) bool {
	for _, n := range indexBuckets {
		if bytes.Equal(name, n) {
			return true
		}
	}
	for _, n := range legacyBuckets {
		if bytes.Equal(name, n) {
			return true
		}
	}
	for _, n := range lockBuckets {
		if bytes.Equal(name, n) {
			return true
		}
	}
	return false
}

// keyCount counts the keys of a bucket by walking them.
func keyCount(b *bolt.Bucket) int {
	n := 0
	c := b.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		n++
	}
	return n
}

// timeKeyLen is the length of timeKey's encoding.
const timeKeyLen = 12

// timeKey encodes t so that byte order is time order, for any t: Unix
// seconds as a big-endian uint64 with the sign bit flipped, then the
// nanoseconds as a big-endian uint32.
func timeKey(t time.Time) []byte {
	k := make([]byte, timeKeyLen)
	binary.BigEndian.PutUint64(k, uint64(t.Unix())^(1<<63))
	binary.BigEndian.PutUint32(k[8:], uint32(t.Nanosecond()))
	return k
}

// statePrefix is the prefix of the keys of the requests in state s in
// bucketRequestsByState. A state never contains a zero byte.
func statePrefix(s State) []byte {
	return append([]byte(s), 0)
}

// stateKey is the key of request id, in state s and last updated at
// updated, in bucketRequestsByState: statePrefix(s), timeKey(updated), id.
// Within a state the keys sort by UpdatedAt, oldest first.
func stateKey(s State, updated time.Time, id string) []byte {
	k := statePrefix(s)
	k = append(k, timeKey(updated)...)
	return append(k, id...)
}

// indexKey is the key of a job in bucketJobsByRequest.
func indexKey(requestID, jobID string) []byte {
	return []byte(requestID + "\x00" + jobID)
}

// Close closes the file. The Bolt must not be used afterwards.
func (b *Bolt) Close() error {
	if err := errors.Join(b.commits.flush(), b.db.Close()); err != nil {
		return fmt.Errorf("close store %s: %w", b.path, err)
	}
	return nil
}

// Path returns the path of the file.
func (b *Bolt) Path() string { return b.path }

// Ping reports whether the store is open and readable, for a readiness
// probe.
func (b *Bolt) Ping(ctx context.Context) error {
	err := b.view(ctx, func(tx *bolt.Tx) error {
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

// Decoded returns how many stored requests and jobs this Bolt has read and
// decoded since it was opened (the check at open excluded). Tests use it to
// show that a read costs what it returns, not what the file holds.
func (b *Bolt) Decoded() int64 { return b.decodes.n.Load() }

// Commits reports how many write transactions the store has run since it
// was opened; each costs the disk syncs of one bbolt commit, so it counts
// fsync rounds (benchmarks report it per command).
func (b *Bolt) Commits() int64 { return b.commits.done.Load() }

// compactTxSize is how many bytes of keys and values CompactBolt copies per
// transaction, which bounds its memory.
const compactTxSize = 64 << 20

// CompactBolt copies the store file src into dst, a new file, leaving out
// the free pages of src, and leaves src as it was. Run it while the bot is
// stopped (src is checked like OpenWith checks a file, and a file another
// process holds is refused), then move dst over src.
//
// Why: a bbolt file never shrinks. Deleting records (Prune) frees their
// pages, and bbolt records the free pages in the file and reuses them for
// later writes, so a store that prunes regularly stops growing at about
// its peak size, but does not give the space back. Compaction copies only
// the live data into a new file, which is then as small as that data. A
// dst that already exists is refused, and on an error a dst this call made
// is removed.
func CompactBolt(src, dst string) error {
	fi, err := os.Stat(src)
	switch {
	case err != nil:
		return fmt.Errorf("compact store %s: %w", src, err)
	case !fi.Mode().IsRegular() || fi.Size() == 0:
		return fmt.Errorf("compact store %s: not a non-empty regular file", src)
	}
	if _, err := verify(src, fi.Size(), DefaultLockTimeout); err != nil {
		return fmt.Errorf("compact store %s: %w", src, err)
	}
	f, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("compact store %s into %s: %w", src, dst, err)
	}
	_ = f.Close()
	if err := compact(src, dst); err != nil {
		_ = os.Remove(dst)
		return fmt.Errorf("compact store %s into %s: %w", src, dst, err)
	}
	return nil
}

// compact copies the bbolt file src into dst, an empty file.
func compact(src, dst string) error {
	from, err := bolt.Open(src, 0o600, &bolt.Options{ReadOnly: true, Timeout: DefaultLockTimeout})
	if err != nil {
		return describeOpenError(err, DefaultLockTimeout)
	}
	defer from.Close()
	to, err := bolt.Open(dst, 0o600, &bolt.Options{Timeout: DefaultLockTimeout})
	if err != nil {
		return err
	}
	if err := bolt.Compact(to, from, compactTxSize); err != nil {
		_ = to.Close()
		return err
	}
	if err := to.Close(); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	return nil
}
