package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultRedisPrefix is the key prefix of a Redis store when
// RedisOptions.Prefix is empty. Give each bot its own prefix to share one
// Redis database between several bots; replicas of one bot share a prefix.
const DefaultRedisPrefix = "geminidb-patch:"

const (
	// redisOpenTimeout bounds the PING (and schema check) of OpenRedis.
	redisOpenTimeout = 5 * time.Second
	// redisOpTimeout bounds one store operation, retries included.
	redisOpTimeout = 10 * time.Second
	// redisMaxAttempts bounds how often an optimistic transaction is tried
	// when other writers keep changing the keys it watches.
	redisMaxAttempts = 100
	// redisMGetChunk is how many keys one MGET asks for.
	redisMGetChunk = 256
	// redisMigrateTimeout bounds the migration of a prefix from the
	// key space of schema 1 or 2 at open, which moves every request once.
	redisMigrateTimeout = 10 * time.Minute
)

// Key names directly under the prefix, shared by every schema version: the
// version itself, and the registry of the replicas.
const (
	keyRedisSchema   = "schema"   // string: schemaVersion; read by every release at open, checked by every write
	keyRedisReplicas = "replicas" // hash: replica ID → JSON Replica
)

// redisSpace is the key space of this schema's records, under the prefix.
// Schemas 1 and 2 kept their records directly under the prefix; a release
// of schema 2 still running during a rolling deploy reads only there.
const redisSpace = "v" + schemaVersion + ":"

// Key names under the prefix and redisSpace. Request IDs and job IDs are
// appended to the names ending in ":"; no name is a prefix of another's
// "name:" form, so no ID can make two keys collide.
const (
	keyRedisRequest     = "request:"      // + request ID: string, JSON Request
	keyRedisRequests    = "requests"      // sorted set: request IDs, score CreatedAt in Unix ms
	keyRedisState       = "state:"        // + state: sorted set of the IDs of the requests in it, score UpdatedAt in Unix µs
	keyRedisJob         = "job:"          // + job ID: string, JSON Job
	keyRedisRequestJobs = "request-jobs:" // + request ID: set of its job IDs
	keyRedisActiveJobs  = "active-jobs"   // set: IDs of the jobs that are Active
	keyRedisLimit       = "limit:"        // + Allow's key: string, JSON limitRecord, expiring with its window
	keyRedisSeen        = "seen:"         // + Remember's key: string, JSON seenRecord, expiring when forgotten
)

// RedisOptions tune OpenRedisWith. The zero value gives the behaviour of
// OpenRedis.
type RedisOptions struct {
	// Prefix is put before every key; "" means DefaultRedisPrefix.
	Prefix string
	// Now returns the current time for CreatedAt, UpdatedAt and events;
	// nil means time.Now. Tests inject a fixed clock here.
	Now func() time.Time
	// WaitTimeout bounds how long a durable write (WithDurable,
	// TransitionLock, Unlock) waits for a replica's acknowledgement; 0
	// means DefaultWaitTimeout.
	WaitTimeout time.Duration
}

// Redis is the store in a Redis database, which several processes (bot
// replicas) can share. It has the methods and semantics of Bolt: every
// read-modify-write (Create, Transition, Update, PutJob, UpdateJob) is one
// optimistic transaction (WATCH, then MULTI/EXEC), retried when another
// writer changed the record in between, so that of concurrent transitions
// out of the same state exactly one wins, across processes too.
//
// Because of those retries, the mutate functions given to Transition,
// Update and UpdateJob may run more than once, each time on a freshly read
// record; they should change only the record they are given.
//
// Keys, all under the prefix: "request:<id>" and "job:<id>" hold the JSON of
// a request or job; "requests" is a sorted set of request IDs by CreatedAt;
// "state:<state>" is a sorted set of the IDs of the requests in that state
// by UpdatedAt, which List and Prune read; "request-jobs:<request id>" is
// the set of a request's job IDs; "active-jobs" is the set of the IDs of
// active jobs; all of them under the key space "v3:" of the prefix.
// "schema", directly under the prefix, holds the layout version. The indexes are written in
// the same transaction as the record they index; readers still check each
// record they read against what they asked for, since the index and the
// records are read one after the other. "limit:<key>" and "seen:<key>"
// hold the JSON state of Allow and Remember for key, with a Redis expiry so
// that they go away once they no longer matter; they stay in Redis, so that
// replicas share them.
//
// A Redis is safe for concurrent use.
type Redis struct {
	fence   // tripped by a write that finds a newer schema
	rdb     *redis.Client
	prefix  string
	path    string // the URL without credentials, for messages
	now     func() time.Time
	decodes decodeCounter

	waitTimeout       time.Duration
	replicas          atomic.Pointer[replicaCount]
	waits, waitsShort atomic.Int64
}

// OpenRedis connects to the Redis database at url (redis://, rediss:// or
// unix://, as parsed by go-redis' ParseURL, or a Sentinel set, see
// IsSentinelURL) with default RedisOptions. See OpenRedisWith.
func OpenRedis(ctx context.Context, url string) (*Redis, error) {
	return OpenRedisWith(ctx, url, RedisOptions{})
}

// OpenRedisWith connects to the Redis database at url, pings it (giving up
// after a few seconds, or when ctx ends) and checks that the store's layout
// version under the prefix is one this code knows, writing it if the prefix
// is new. Errors name the address and database but never the password; a
// prefix a newer release has migrated is refused with a *SchemaError.
//
// A prefix written by an older release (schema 1 or 2) is migrated: the
// version is set to 3 first, so that releases of schema 2 refuse to start
// on it from then on, and every request and job is then moved from the
// old key space into this schema's (see migrateLegacy). A schema 2 replica
// still running meanwhile sees an empty store: it can act on none of the
// records, and the requests it creates until it is stopped are moved by
// the next open of this release.
func OpenRedisWith(ctx context.Context, url string, opts RedisOptions) (*Redis, error) {
	if opts.Prefix == "" {
		opts.Prefix = DefaultRedisPrefix
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	// A plain client, or a failover client for a Sentinel URL (sentinel.go).
	rdb, path, err := newRedisClient(url)
	if err != nil {
		return nil, err
	}
	if opts.WaitTimeout <= 0 {
		opts.WaitTimeout = DefaultWaitTimeout
	}
	s := &Redis{rdb: rdb, prefix: opts.Prefix, path: path, now: opts.Now, waitTimeout: opts.WaitTimeout}

	openCtx, cancel := context.WithTimeout(ctx, redisOpenTimeout)
	defer cancel()
	if err := s.rdb.Ping(openCtx).Err(); err != nil {
		_ = s.rdb.Close()
		return nil, scrubURLPasswords(fmt.Errorf("open store %s: cannot reach Redis: %w", path, err), url)
	}
	err = s.prepareSchema(ctx)
	if err == nil {
		buildCtx, cancel := context.WithTimeout(ctx, redisMigrateTimeout)
		defer cancel()
		err = s.buildIndexes(buildCtx)
	}
	if err != nil {
		_ = s.rdb.Close()
		return nil, scrubURLPasswords(fmt.Errorf("open store %s: %w", path, err), url)
	}
	return s, nil
}

// key returns the full name of a key of this schema's key space.
func (s *Redis) key(name string) string { return s.prefix + redisSpace + name }

// stateKey returns the full name of the index of the requests in state st.
func (s *Redis) stateKey(st State) string {
	return s.prefix + redisSpace + keyRedisState + string(st)
}

// msScore is the score of t in the set of all requests: Unix milliseconds,
// rounded down.
func msScore(t time.Time) float64 { return float64(t.UnixMilli()) }

// usScore is the score of t in the index of a state: Unix microseconds,
// rounded down, which a float64 holds exactly until the year 2255.
func usScore(t time.Time) float64 { return float64(t.UnixMicro()) }

// Decoded returns how many stored requests and jobs this Redis has read
// and decoded since it was opened (the migration at open excluded). Tests
// use it to show that a read costs what it returns, not what the database
// holds.
func (s *Redis) Decoded() int64 { return s.decodes.n.Load() }

// Close closes the connections. The Redis must not be used afterwards.
func (s *Redis) Close() error {
	if err := s.rdb.Close(); err != nil {
		return fmt.Errorf("close store %s: %w", s.path, err)
	}
	return nil
}

// Path returns the URL of the database without credentials: scheme,
// address and database number, such as "redis://10.0.0.5:6379/0".
func (s *Redis) Path() string { return s.path }

// Ping reports whether Redis answers, for a readiness probe.
func (s *Redis) Ping(ctx context.Context) error {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("ping store %s: %w", s.path, err)
	}
	return nil
}

// opCtx returns the context of one operation: ctx, bounded by
// redisOpTimeout.
func (s *Redis) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, redisOpTimeout)
}

// atomically runs fn in an optimistic transaction watching keys: fn reads
// through tx and writes with tx.TxPipelined, which fails with
// redis.TxFailedErr when a watched key changed since the WATCH. Then fn runs
// again, after a short random pause, up to redisMaxAttempts times. Any other
// error from fn is returned as is.
//
// Every write goes through here, and so through the schema fence: the
// transaction also watches the schema version and reads it before fn runs
// (see fenced), so no write commits once a newer release has migrated the
// prefix.
func (s *Redis) atomically(ctx context.Context, fn func(tx *redis.Tx) error, keys ...string) error {
	fn, keys = s.fenced(ctx, fn), append(slices.Clip(keys), s.prefix+keyRedisSchema)
	for attempt := 1; ; attempt++ {
		err := s.rdb.Watch(ctx, fn, keys...)
		if !errors.Is(err, redis.TxFailedErr) {
			return err
		}
		if attempt == redisMaxAttempts {
			return fmt.Errorf("gave up after %d attempts, other writers kept changing %s: %w", attempt, strings.Join(keys, ", "), err)
		}
		// Up to 0.2ms per attempt so far, at most 10ms.
		pause := time.Duration(rand.Int64N(int64(min(attempt, 50)) * int64(200*time.Microsecond)))
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %d attempts: %w", attempt, context.Cause(ctx))
		case <-time.After(pause):
		}
	}
}

// redisGetJSON reads key through c and decodes it into v, or returns
// ErrNotFound.
func redisGetJSON(ctx context.Context, c redis.Cmdable, key string, v any) error {
	return getJSONCounted(ctx, c, key, v, nil)
}

// getJSON is redisGetJSON for a request or job, counted for Decoded.
func (s *Redis) getJSON(ctx context.Context, c redis.Cmdable, key string, v any) error {
	return getJSONCounted(ctx, c, key, v, &s.decodes)
}

// getJSONCounted reads key through c and decodes it into v, counting it in
// d unless d is nil, or returns ErrNotFound.
func getJSONCounted(ctx context.Context, c redis.Cmdable, key string, v any, d *decodeCounter) error {
	data, err := c.Get(ctx, key).Bytes()
	switch {
	case errors.Is(err, redis.Nil):
		return ErrNotFound
	case err != nil:
		return fmt.Errorf("read %s: %w", key, err)
	}
	if d != nil {
		err = d.decode(data, v)
	} else {
		err = json.Unmarshal(data, v)
	}
	if err != nil {
		return fmt.Errorf("decode %s: %w", key, err)
	}
	return nil
}
