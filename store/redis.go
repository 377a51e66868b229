package store

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	neturl "net/url"
	"slices"
	"strconv"
	"strings"
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
	// redisMigrateTimeout bounds the migration of a prefix from schema 1
	// at open, which reads every request once.
	redisMigrateTimeout = 10 * time.Minute
)

// Key names under the prefix. Request IDs and job IDs are appended to the
// names ending in ":"; no name is a prefix of another's "name:" form, so no
// ID can make two keys collide.
const (
	keyRedisSchema      = "schema"        // string: schemaVersion
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
// active jobs; "schema" holds the layout version. The indexes are written in
// the same transaction as the record they index; readers still check each
// record they read against what they asked for, since the index and the
// records are read one after the other. "limit:<key>" and "seen:<key>"
// hold the JSON state of Allow and Remember for key, with a Redis expiry so
// that they go away once they no longer matter; they stay in Redis, so that
// replicas share them.
//
// A Redis is safe for concurrent use.
type Redis struct {
	rdb     *redis.Client
	prefix  string
	path    string // the URL without credentials, for messages
	now     func() time.Time
	decodes decodeCounter
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
// is new. Errors name the address and database but never the password.
//
// A prefix written by the version before the state index (schema 1) is
// migrated: the index is built from the requests, a few hundred at a time,
// each batch in a transaction that watches its requests, and the prefix is
// then marked as schema 2, which older versions refuse to open. Stop the
// replicas running an older version before starting this one: their
// writes in the meantime do not keep the index.
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
	s := &Redis{rdb: rdb, prefix: opts.Prefix, path: path, now: opts.Now}

	openCtx, cancel := context.WithTimeout(ctx, redisOpenTimeout)
	defer cancel()
	if err := s.rdb.Ping(openCtx).Err(); err != nil {
		_ = s.rdb.Close()
		return nil, scrubURLPasswords(fmt.Errorf("open store %s: cannot reach Redis: %w", path, err), url)
	}
	v, err := s.checkSchema(openCtx)
	if err == nil && v == schemaVersion1 {
		migrateCtx, cancel := context.WithTimeout(ctx, redisMigrateTimeout)
		defer cancel()
		err = s.migrate1(migrateCtx)
	}
	if err != nil {
		_ = s.rdb.Close()
		return nil, scrubURLPasswords(fmt.Errorf("open store %s: %w", path, err), url)
	}
	return s, nil
}

// checkSchema writes the layout version under a new prefix, refuses one
// written by an unknown version and returns the version.
func (s *Redis) checkSchema(ctx context.Context) (string, error) {
	key := s.key(keyRedisSchema)
	if err := s.rdb.SetNX(ctx, key, schemaVersion, 0).Err(); err != nil {
		return "", fmt.Errorf("write schema version %s: %w", key, err)
	}
	v, err := s.rdb.Get(ctx, key).Result()
	if err != nil {
		return "", fmt.Errorf("read schema version %s: %w", key, err)
	}
	if v != schemaVersion && v != schemaVersion1 {
		return "", fmt.Errorf("key %s holds schema version %q, this program knows %q; use another prefix or database", key, v, schemaVersion)
	}
	return v, nil
}

// migrate1 builds the state index of a schema 1 prefix from its requests
// and marks the prefix as schema 2. Each batch of requests is read and
// indexed in one transaction watching them, so a request that another
// (migrated) replica changes meanwhile is indexed as it is after the
// change. Several replicas may migrate at once: the result is the same.
func (s *Redis) migrate1(ctx context.Context) error {
	ids, err := s.rdb.ZRange(ctx, s.key(keyRedisRequests), 0, -1).Result()
	if err != nil {
		return fmt.Errorf("migrate from schema 1: read %s: %w", s.key(keyRedisRequests), err)
	}
	for chunk := range slices.Chunk(ids, redisMGetChunk) {
		keys := make([]string, len(chunk))
		for i, id := range chunk {
			keys[i] = s.key(keyRedisRequest + id)
		}
		err := s.atomically(ctx, func(tx *redis.Tx) error {
			vals, err := tx.MGet(ctx, keys...).Result()
			if err != nil {
				return fmt.Errorf("read %s…: %w", keys[0], err)
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				for i, v := range vals {
					str, ok := v.(string)
					if !ok {
						continue
					}
					var r Request
					if err := json.Unmarshal([]byte(str), &r); err != nil {
						return fmt.Errorf("decode request %q: %w", chunk[i], err)
					}
					p.ZAdd(ctx, s.stateKey(r.State), redis.Z{Score: usScore(r.UpdatedAt), Member: chunk[i]})
				}
				return nil
			})
			return err
		}, keys...)
		if err != nil {
			return fmt.Errorf("migrate from schema 1: %w", err)
		}
	}
	if err := s.rdb.Set(ctx, s.key(keyRedisSchema), schemaVersion, 0).Err(); err != nil {
		return fmt.Errorf("migrate from schema 1: write schema version: %w", err)
	}
	return nil
}

// redactedRedisURL describes the database of a parsed URL without
// credentials or options: scheme, address and database number.
func redactedRedisURL(raw string, o *redis.Options) string {
	scheme, _, _ := strings.Cut(raw, "://")
	scheme = strings.ToLower(scheme)
	if o.Network == "unix" {
		return fmt.Sprintf("%s://%s?db=%d", scheme, o.Addr, o.DB)
	}
	return fmt.Sprintf("%s://%s/%d", scheme, o.Addr, o.DB)
}

// RedactURL renders a URL without credentials, query or fragment, for logs
// and messages (a redis:// store URL may carry a password).
func RedactURL(raw string) string {
	raw = stripUserinfo(raw)
	u, err := neturl.Parse(raw)
	if err != nil {
		return "(unparsable Redis URL)"
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u.String()
}

// scrubPassword returns err, or, if its message contains the password of
// raw (as written or percent-decoded), an error with the same message in
// which the password is replaced by "xxxxx" (which no longer wraps
// anything).
func scrubPassword(err error, raw string) error {
	pw := urlPassword(raw)
	if pw == "" {
		return err
	}
	forms := []string{pw}
	if dec, derr := neturl.PathUnescape(pw); derr == nil && dec != "" && dec != pw {
		forms = append(forms, dec)
	}
	msg := err.Error()
	for _, f := range forms {
		msg = strings.ReplaceAll(msg, f, "xxxxx")
	}
	if msg == err.Error() {
		return err
	}
	return errors.New(msg)
}

// urlPassword finds the password, as written, in the userinfo of raw
// without relying on raw being a valid URL.
func urlPassword(raw string) string {
	_, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return ""
	}
	// A host never contains "@", a password may contain "/", "?" or "#"
	// unescaped: the user information ends at the last "@".
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return ""
	}
	_, pw, _ := strings.Cut(rest[:at], ":")
	return pw
}

// stripUserinfo removes everything between "://" and the last "@", so no
// form of a password survives (net/url would split an unescaped one at
// "/", "?" or "#" and keep the rest in the host or path).
func stripUserinfo(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		rest = rest[at+1:]
	}
	return scheme + "://" + rest
}

// key returns the full name of a key.
func (s *Redis) key(name string) string { return s.prefix + name }

// stateKey returns the full name of the index of the requests in state st.
func (s *Redis) stateKey(st State) string { return s.prefix + keyRedisState + string(st) }

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
func (s *Redis) Ping() error {
	ctx, cancel := s.ctx()
	defer cancel()
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("ping store %s: %w", s.path, err)
	}
	return nil
}

// ctx returns the context of one operation.
func (s *Redis) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), redisOpTimeout)
}

// atomically runs fn in an optimistic transaction watching keys: fn reads
// through tx and writes with tx.TxPipelined, which fails with
// redis.TxFailedErr when a watched key changed since the WATCH. Then fn runs
// again, after a short random pause, up to redisMaxAttempts times. Any other
// error from fn is returned as is.
func (s *Redis) atomically(ctx context.Context, fn func(tx *redis.Tx) error, keys ...string) error {
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

// setRequest queues the writes that save request r, encoded as data, and
// keep its indexes in step; from is the state it was in (for a new
// request: its own).
func (s *Redis) setRequest(ctx context.Context, p redis.Pipeliner, from State, r Request, data []byte) {
	p.Set(ctx, s.key(keyRedisRequest+r.ID), data, 0)
	p.ZAdd(ctx, s.key(keyRedisRequests), redis.Z{Score: msScore(r.CreatedAt), Member: r.ID})
	if from != r.State {
		p.ZRem(ctx, s.stateKey(from), r.ID)
	}
	p.ZAdd(ctx, s.stateKey(r.State), redis.Z{Score: usScore(r.UpdatedAt), Member: r.ID})
}

// Create stores a new request. It sets CreatedAt and UpdatedAt to now when
// they are zero, and returns an error wrapping ErrExists if the ID is taken.
func (s *Redis) Create(r Request) error {
	if err := prepareCreate(&r, s.now); err != nil {
		return err
	}
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("create request %s: encode: %w", r.ID, err)
	}
	ctx, cancel := s.ctx()
	defer cancel()
	key := s.key(keyRedisRequest + r.ID)
	err = s.atomically(ctx, func(tx *redis.Tx) error {
		n, err := tx.Exists(ctx, key).Result()
		if err != nil {
			return fmt.Errorf("read %s: %w", key, err)
		}
		if n > 0 {
			return ErrExists
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			s.setRequest(ctx, p, r.State, r, data)
			return nil
		})
		return err
	}, key)
	if err != nil {
		return fmt.Errorf("create request %s: %w", r.ID, err)
	}
	return nil
}

// Get returns the request with the given ID, or an error wrapping
// ErrNotFound.
func (s *Redis) Get(id string) (Request, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	var r Request
	if err := s.getJSON(ctx, s.rdb, s.key(keyRedisRequest+id), &r); err != nil {
		return Request{}, fmt.Errorf("get request %s: %w", id, err)
	}
	return r, nil
}

// Transition moves request id from one of the states in from to state to,
// atomically, also against other processes using the same Redis and prefix:
// if the request is in none of them, it returns a *ConflictError (errors.Is
// ErrConflict) and changes nothing. Otherwise it applies mutate (which may
// be nil, and cannot change the ID), sets State, appends an Event by user,
// sets UpdatedAt and saves, all in one transaction, and returns the request
// as stored.
func (s *Redis) Transition(id string, from []State, to State, user string, mutate func(*Request)) (Request, error) {
	return s.TransitionIf(id, from, to, user, orNoError(mutate))
}

// TransitionIf is Transition with a mutate that may refuse: when mutate
// returns an error, nothing is written and the error is returned wrapped
// (test for it with errors.Is or errors.As). It lets a caller check, in
// the same transaction as the swap, more than the state. mutate may run
// more than once (when another writer changed the request meanwhile).
func (s *Redis) TransitionIf(id string, from []State, to State, user string, mutate func(*Request) error) (Request, error) {
	if err := checkTransition(id, from, to); err != nil {
		return Request{}, err
	}
	ctx, cancel := s.ctx()
	defer cancel()
	key := s.key(keyRedisRequest + id)
	var out Request
	err := s.atomically(ctx, func(tx *redis.Tx) error {
		var r Request
		if err := s.getJSON(ctx, tx, key, &r); err != nil {
			return err
		}
		old := r.State
		if err := applyTransition(&r, id, from, to, user, s.now, mutate); err != nil {
			return err
		}
		var err error
		out, err = s.saveRequest(ctx, tx, old, r)
		return err
	}, key)
	if _, ok := errors.AsType[*ConflictError](err); ok {
		return Request{}, err // as Bolt returns it
	}
	if err != nil {
		return Request{}, fmt.Errorf("transition request %s: %w", id, err)
	}
	return out, nil
}

// saveRequest writes r, whose key tx watches and which was in state from,
// and its indexes in one MULTI/EXEC, and returns r as stored.
func (s *Redis) saveRequest(ctx context.Context, tx *redis.Tx, from State, r Request) (Request, error) {
	data, err := json.Marshal(r)
	if err != nil {
		return Request{}, fmt.Errorf("encode: %w", err)
	}
	if _, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
		s.setRequest(ctx, p, from, r, data)
		return nil
	}); err != nil {
		return Request{}, err
	}
	var out Request
	if err := json.Unmarshal(data, &out); err != nil {
		return Request{}, fmt.Errorf("decode: %w", err)
	}
	return out, nil
}

// Update changes request id without changing its state, atomically: mutate's
// error aborts and is returned wrapped; mutate may not change ID or State
// (use Transition). It sets UpdatedAt and returns the request as stored.
func (s *Redis) Update(id string, mutate func(*Request) error) (Request, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	key := s.key(keyRedisRequest + id)
	var out Request
	err := s.atomically(ctx, func(tx *redis.Tx) error {
		var r Request
		if err := s.getJSON(ctx, tx, key, &r); err != nil {
			return err
		}
		if err := applyUpdate(&r, id, s.now, mutate); err != nil {
			return err
		}
		var err error
		out, err = s.saveRequest(ctx, tx, r.State, r)
		return err
	}, key)
	if err != nil {
		return Request{}, fmt.Errorf("update request %s: %w", id, err)
	}
	return out, nil
}

// List returns the requests in any of the given states, or all requests when
// none is given, ordered by CreatedAt (then ID). Given states, it reads
// only the requests in them, through the state index.
func (s *Redis) List(states ...State) ([]Request, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	ids, err := s.listIDs(ctx, states)
	if err != nil {
		return nil, fmt.Errorf("list requests: %w", err)
	}
	var out []Request
	err = s.mget(ctx, keyRedisRequest, ids, func(id string, data []byte) error {
		var r Request
		if err := s.decodes.decode(data, &r); err != nil {
			return fmt.Errorf("decode request %q: %w", id, err)
		}
		if len(states) == 0 || slices.Contains(states, r.State) {
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list requests: %w", err)
	}
	sortRequests(out)
	return out, nil
}

// listIDs returns the IDs of the requests in states, read from their
// indexes in one MULTI/EXEC, or of all requests when states is empty.
func (s *Redis) listIDs(ctx context.Context, states []State) ([]string, error) {
	if len(states) == 0 {
		ids, err := s.rdb.ZRange(ctx, s.key(keyRedisRequests), 0, -1).Result()
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", s.key(keyRedisRequests), err)
		}
		return ids, nil
	}
	var cmds []*redis.StringSliceCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for i, st := range states {
			if !slices.Contains(states[:i], st) {
				cmds = append(cmds, p.ZRange(ctx, s.stateKey(st), 0, -1))
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read %s…: %w", s.stateKey(states[0]), err)
	}
	var ids []string
	for _, c := range cmds {
		ids = append(ids, c.Val()...)
	}
	slices.Sort(ids)
	return slices.Compact(ids), nil
}

// mget reads the keys name+id for ids, in chunks, and calls fn for each
// that exists. An ID whose record is missing is skipped: that can only be
// an index entry read before the record was deleted (Prune).
func (s *Redis) mget(ctx context.Context, name string, ids []string, fn func(id string, data []byte) error) error {
	for chunk := range slices.Chunk(ids, redisMGetChunk) {
		keys := make([]string, len(chunk))
		for i, id := range chunk {
			keys[i] = s.key(name + id)
		}
		vals, err := s.rdb.MGet(ctx, keys...).Result()
		if err != nil {
			return fmt.Errorf("read %s…: %w", keys[0], err)
		}
		for i, v := range vals {
			str, ok := v.(string)
			if !ok {
				continue
			}
			if err := fn(chunk[i], []byte(str)); err != nil {
				return err
			}
		}
	}
	return nil
}

// PutJob stores j, replacing any job with the same ID.
func (s *Redis) PutJob(j Job) error {
	if j.ID == "" {
		return errors.New("put job: empty ID")
	}
	ctx, cancel := s.ctx()
	defer cancel()
	key := s.key(keyRedisJob + j.ID)
	err := s.atomically(ctx, func(tx *redis.Tx) error {
		var old Job
		switch err := s.getJSON(ctx, tx, key, &old); {
		case errors.Is(err, ErrNotFound):
			_, err := s.saveJob(ctx, tx, nil, j)
			return err
		case err != nil:
			return err
		}
		_, err := s.saveJob(ctx, tx, &old, j)
		return err
	}, key)
	if err != nil {
		return fmt.Errorf("put job %s: %w", j.ID, err)
	}
	return nil
}

// saveJob writes j, whose key tx watches, in one MULTI/EXEC with the index
// changes from old (nil for a new job) to j, and returns j as stored.
func (s *Redis) saveJob(ctx context.Context, tx *redis.Tx, old *Job, j Job) (Job, error) {
	data, err := json.Marshal(j)
	if err != nil {
		return Job{}, fmt.Errorf("encode: %w", err)
	}
	_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, s.key(keyRedisJob+j.ID), data, 0)
		if old != nil && old.RequestID != j.RequestID {
			p.SRem(ctx, s.key(keyRedisRequestJobs+old.RequestID), j.ID)
		}
		p.SAdd(ctx, s.key(keyRedisRequestJobs+j.RequestID), j.ID)
		if j.Active() {
			p.SAdd(ctx, s.key(keyRedisActiveJobs), j.ID)
		} else {
			p.SRem(ctx, s.key(keyRedisActiveJobs), j.ID)
		}
		return nil
	})
	if err != nil {
		return Job{}, err
	}
	var out Job
	if err := json.Unmarshal(data, &out); err != nil {
		return Job{}, fmt.Errorf("decode: %w", err)
	}
	return out, nil
}

// Job returns the job with the given ID, or an error wrapping ErrNotFound.
func (s *Redis) Job(id string) (Job, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	var j Job
	if err := s.getJSON(ctx, s.rdb, s.key(keyRedisJob+id), &j); err != nil {
		return Job{}, fmt.Errorf("get job %s: %w", id, err)
	}
	return j, nil
}

// UpdateJob reads job id, applies mutate and saves the result in one
// transaction, atomic also against other processes, and returns the job as
// stored. If mutate returns an error, nothing is saved and the error is
// returned wrapped, so a caller can use a sentinel such as "already
// reported" to learn that another goroutine or replica got there first.
// mutate may not change the ID.
func (s *Redis) UpdateJob(id string, mutate func(*Job) error) (Job, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	key := s.key(keyRedisJob + id)
	var out Job
	err := s.atomically(ctx, func(tx *redis.Tx) error {
		var j Job
		if err := s.getJSON(ctx, tx, key, &j); err != nil {
			return err
		}
		old := j
		if err := applyJobUpdate(&j, id, mutate); err != nil {
			return err
		}
		var err error
		out, err = s.saveJob(ctx, tx, &old, j)
		return err
	}, key)
	if err != nil {
		return Job{}, fmt.Errorf("update job %s: %w", id, err)
	}
	return out, nil
}

// Jobs returns the jobs of request requestID, ordered by SubmittedAt, then
// ID.
func (s *Redis) Jobs(requestID string) ([]Job, error) {
	out, err := s.jobsIn(s.key(keyRedisRequestJobs+requestID), func(j Job) bool { return j.RequestID == requestID })
	if err != nil {
		return nil, fmt.Errorf("list jobs of request %s: %w", requestID, err)
	}
	return out, nil
}

// ActiveJobs returns the jobs still followed (see Job.Active), ordered by
// SubmittedAt, then ID.
func (s *Redis) ActiveJobs() ([]Job, error) {
	out, err := s.jobsIn(s.key(keyRedisActiveJobs), Job.Active)
	if err != nil {
		return nil, fmt.Errorf("list active jobs: %w", err)
	}
	return out, nil
}

// jobsIn returns the jobs whose IDs are in the set at key and for which
// keep holds, sorted. keep rechecks what the set says, since a job can
// change between reading the set and reading the job.
func (s *Redis) jobsIn(key string, keep func(Job) bool) ([]Job, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	ids, err := s.rdb.SMembers(ctx, key).Result()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	var out []Job
	err = s.mget(ctx, keyRedisJob, ids, func(id string, data []byte) error {
		var j Job
		if err := s.decodes.decode(data, &j); err != nil {
			return fmt.Errorf("decode job %q: %w", id, err)
		}
		if keep(j) {
			out = append(out, j)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sortJobs(out)
	return out, nil
}

// Prune deletes at most max requests that are in a final state (see
// State.Final) and were last updated before before, oldest first, with
// their jobs and index entries, and returns how many it deleted. It reads
// the oldest entries of the final states' indexes (at most max of each)
// and then each candidate, so its cost follows what it deletes, not how
// much the database holds. Each request goes in its own transaction,
// watching the request and its set of jobs, so a request that changed
// since it was read is looked at again, and replicas may prune at the same
// time. Call it again until it returns less than max to delete everything
// due; a max of 0 or less deletes nothing. Requests in other states are
// never deleted.
func (s *Redis) Prune(before time.Time, max int) (int, error) {
	if max <= 0 {
		return 0, nil
	}
	cands, err := s.pruneCandidates(before, max)
	if err != nil {
		return 0, fmt.Errorf("prune requests final before %s: %w", before.Format(time.RFC3339Nano), err)
	}
	deleted := 0
	for _, c := range cands {
		ok, err := s.pruneRequest(c.id, c.state, before)
		if err != nil {
			return deleted, fmt.Errorf("prune requests final before %s: request %s: %w", before.Format(time.RFC3339Nano), c.id, err)
		}
		if ok {
			deleted++
		}
	}
	return deleted, nil
}

// pruneCandidate is a request that the state index says is in final state
// state and was last updated at score (usScore).
type pruneCandidate struct {
	id    string
	state State
	score float64
}

// pruneCandidates returns the at most max oldest requests in final states
// that may have been updated before before, which pruneRequest checks
// exactly: their score is below before's, or, when before falls within a
// microsecond, equal to it.
func (s *Redis) pruneCandidates(before time.Time, max int) ([]pruneCandidate, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	limit := strconv.FormatInt(before.UnixMicro(), 10)
	if before.Nanosecond()%1000 == 0 {
		limit = "(" + limit
	}
	by := &redis.ZRangeBy{Min: "-inf", Max: limit, Count: int64(max)}
	cmds := make([]*redis.ZSliceCmd, len(finalStates))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, st := range finalStates {
			cmds[i] = p.ZRangeByScoreWithScores(ctx, s.stateKey(st), by)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read %s…: %w", s.stateKey(finalStates[0]), err)
	}
	var cands []pruneCandidate
	for i, c := range cmds {
		for _, z := range c.Val() {
			id, _ := z.Member.(string)
			cands = append(cands, pruneCandidate{id: id, state: finalStates[i], score: z.Score})
		}
	}
	slices.SortFunc(cands, func(a, b pruneCandidate) int {
		if c := cmp.Compare(a.score, b.score); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	})
	return cands[:min(max, len(cands))], nil
}

// pruneRequest deletes request id, found in the index of state st, if it
// is still in st and was last updated before before, with its jobs and
// index entries, and reports whether it did. An index entry whose request
// is gone or in another state is removed.
func (s *Redis) pruneRequest(id string, st State, before time.Time) (bool, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	key, jobsKey := s.key(keyRedisRequest+id), s.key(keyRedisRequestJobs+id)
	deleted := false
	err := s.atomically(ctx, func(tx *redis.Tx) error {
		deleted = false
		var r Request
		switch err := s.getJSON(ctx, tx, key, &r); {
		case errors.Is(err, ErrNotFound):
			r.State = "" // a stale entry
		case err != nil:
			return err
		}
		if r.State != st {
			_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.ZRem(ctx, s.stateKey(st), id)
				return nil
			})
			return err
		}
		if !r.UpdatedAt.Before(before) {
			return nil
		}
		jobIDs, err := tx.SMembers(ctx, jobsKey).Result()
		if err != nil {
			return fmt.Errorf("read %s: %w", jobsKey, err)
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Del(ctx, key, jobsKey)
			p.ZRem(ctx, s.key(keyRedisRequests), id)
			p.ZRem(ctx, s.stateKey(st), id)
			if len(jobIDs) > 0 {
				keys := make([]string, len(jobIDs))
				members := make([]any, len(jobIDs))
				for i, jid := range jobIDs {
					keys[i], members[i] = s.key(keyRedisJob+jid), jid
				}
				p.Del(ctx, keys...)
				p.SRem(ctx, s.key(keyRedisActiveJobs), members...)
			}
			return nil
		})
		deleted = err == nil
		return err
	}, key, jobsKey)
	return deleted, err
}

// Allow records one hit for key and reports whether it is within limit hits
// per window, counting the hits of every process sharing the Redis and
// prefix. Windows are fixed, not sliding and not aligned to the clock: a
// window starts at the first hit after the previous one ended (or the first
// hit ever) and lasts the window given at that hit. Only allowed hits are
// counted; a refused hit changes nothing, in particular it does not extend
// the window. The read, the decision and the write are one optimistic
// transaction, so concurrent calls, from any process, never allow more
// than limit hits per window.
//
// The window's start and end are taken from RedisOptions.Now and stored in
// the value under "limit:<key>", so they do not depend on Redis' clock;
// the key's Redis expiry (the rest of the window, from the same clock) only
// reclaims the space once the window is over.
//
// An empty key, a limit below 1 or a window of 0 or less is an error.
func (s *Redis) Allow(key string, limit int, window time.Duration) (bool, error) {
	if err := checkAllow(key, limit, window); err != nil {
		return false, fmt.Errorf("allow %q: %w", key, err)
	}
	ctx, cancel := s.ctx()
	defer cancel()
	rkey := s.key(keyRedisLimit + key)
	var allowed bool
	err := s.atomically(ctx, func(tx *redis.Tx) error {
		var rec limitRecord
		found, err := redisGetRecord(ctx, tx, rkey, &rec)
		if err != nil {
			return err
		}
		now := s.now()
		var save bool
		allowed, save = applyHit(&rec, found, limit, window, now)
		if !save {
			return nil
		}
		return s.setExpiring(ctx, tx, rkey, rec, rec.End.Sub(now))
	}, rkey)
	if err != nil {
		return false, fmt.Errorf("allow %q: %w", key, err)
	}
	return allowed, nil
}

// Remember reports whether key is new: true the first time it is seen by
// any process sharing the Redis and prefix, and again once ttl has passed
// since the call that last returned true; false for every call in between
// (which does not extend the ttl). The check and the write are one
// optimistic transaction, so of concurrent calls for a new key, from any
// process, exactly one returns true.
//
// Until when the key is remembered is taken from RedisOptions.Now and
// stored in the value under "seen:<key>", so it does not depend on Redis'
// clock; the key's Redis expiry (ttl) only reclaims the space.
//
// An empty key or a ttl of 0 or less is an error.
func (s *Redis) Remember(key string, ttl time.Duration) (bool, error) {
	if err := checkRemember(key, ttl); err != nil {
		return false, fmt.Errorf("remember %q: %w", key, err)
	}
	ctx, cancel := s.ctx()
	defer cancel()
	rkey := s.key(keyRedisSeen + key)
	var isNew bool
	err := s.atomically(ctx, func(tx *redis.Tx) error {
		var rec seenRecord
		found, err := redisGetRecord(ctx, tx, rkey, &rec)
		if err != nil {
			return err
		}
		if isNew = applySeen(&rec, found, ttl, s.now()); !isNew {
			return nil
		}
		return s.setExpiring(ctx, tx, rkey, rec, ttl)
	}, rkey)
	if err != nil {
		return false, fmt.Errorf("remember %q: %w", key, err)
	}
	return isNew, nil
}

// redisGetRecord reads key through c into v and reports whether it exists.
func redisGetRecord(ctx context.Context, c redis.Cmdable, key string, v any) (bool, error) {
	switch err := redisGetJSON(ctx, c, key, v); {
	case errors.Is(err, ErrNotFound):
		return false, nil
	case err != nil:
		return false, err
	}
	return true, nil
}

// setExpiring writes rec as JSON to key, which tx watches, in one
// MULTI/EXEC, to expire after ttl rounded up to whole milliseconds.
func (s *Redis) setExpiring(ctx context.Context, tx *redis.Tx, key string, rec any, ttl time.Duration) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	ttl = max(ttl, time.Millisecond)
	ttl = (ttl + time.Millisecond - 1).Truncate(time.Millisecond)
	_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, key, data, ttl)
		return nil
	})
	return err
}

// recentPage is how many IDs Recent reads from a state's index at a time.
const recentPage = 50

// Recent returns at most n requests in states for which keep (nil: any)
// holds, newest first by UpdatedAt, reading each state's sorted set from
// its newest end a page at a time and stopping once n are kept.
func (s *Redis) Recent(n int, keep func(Request) bool, states ...State) ([]Request, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	var out []Request
	for i, st := range states {
		if slices.Contains(states[:i], st) {
			continue
		}
		kept := 0
		for start := int64(0); kept < n; start += recentPage {
			ids, err := s.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{Key: s.stateKey(st), Start: start, Stop: start + recentPage - 1, Rev: true}).Result()
			if err != nil {
				return nil, fmt.Errorf("recent requests: read %s: %w", s.stateKey(st), err)
			}
			if len(ids) == 0 {
				break
			}
			err = s.mget(ctx, keyRedisRequest, ids, func(_ string, data []byte) error {
				if kept >= n {
					return nil
				}
				var r Request
				if err := s.decodes.decode(data, &r); err != nil {
					return err
				}
				if keep == nil || keep(r) {
					out = append(out, r)
					kept++
				}
				return nil
			})
			if err != nil {
				return nil, fmt.Errorf("recent requests: %w", err)
			}
			if len(ids) < recentPage {
				break
			}
		}
	}
	return newestFirst(out, n), nil
}
