package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	neturl "net/url"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
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
)

// Key names under the prefix. Request IDs and job IDs are appended to the
// names ending in ":"; no name is a prefix of another's "name:" form, so no
// ID can make two keys collide.
const (
	keyRedisSchema      = "schema"        // string: schemaVersion
	keyRedisRequest     = "request:"      // + request ID: string, JSON Request
	keyRedisRequests    = "requests"      // sorted set: request IDs, score CreatedAt in Unix ms
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
// "request-jobs:<request id>" is the set of a request's job IDs;
// "active-jobs" is the set of the IDs of active jobs; "schema" holds the
// layout version. The indexes are written in the same transaction as the
// record they index. "limit:<key>" and "seen:<key>" hold the JSON state of
// Allow and Remember for key, with a Redis expiry so that they go away
// once they no longer matter.
//
// A Redis is safe for concurrent use.
type Redis struct {
	rdb    *redis.Client
	prefix string
	path   string // the URL without credentials, for messages
	now    func() time.Time
}

// OpenRedis connects to the Redis database at url (redis://, rediss:// or
// unix://, as parsed by go-redis' ParseURL) with default RedisOptions. See
// OpenRedisWith.
func OpenRedis(ctx context.Context, url string) (*Redis, error) {
	return OpenRedisWith(ctx, url, RedisOptions{})
}

// OpenRedisWith connects to the Redis database at url, pings it (giving up
// after a few seconds, or when ctx ends) and checks that the store's layout
// version under the prefix is one this code knows, writing it if the prefix
// is new. Errors name the address and database but never the password.
func OpenRedisWith(ctx context.Context, url string, opts RedisOptions) (*Redis, error) {
	if opts.Prefix == "" {
		opts.Prefix = DefaultRedisPrefix
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	ro, err := redis.ParseURL(url)
	if err != nil {
		if ue, ok := errors.AsType[*neturl.Error](err); ok {
			err = ue.Err // without the URL that net/url quotes
		}
		return nil, scrubPassword(fmt.Errorf("open store %s: invalid Redis URL: %w", RedactURL(url), err), url)
	}
	path := redactedRedisURL(url, ro)
	// Maintenance notifications are a Redis Enterprise/Cloud feature; in
	// "auto" mode go-redis probes for them on every new connection.
	ro.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	s := &Redis{rdb: redis.NewClient(ro), prefix: opts.Prefix, path: path, now: opts.Now}

	ctx, cancel := context.WithTimeout(ctx, redisOpenTimeout)
	defer cancel()
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		_ = s.rdb.Close()
		return nil, scrubPassword(fmt.Errorf("open store %s: cannot reach Redis: %w", path, err), url)
	}
	if err := s.checkSchema(ctx); err != nil {
		_ = s.rdb.Close()
		return nil, scrubPassword(fmt.Errorf("open store %s: %w", path, err), url)
	}
	return s, nil
}

// checkSchema writes the layout version under a new prefix and refuses one
// written by an unknown version.
func (s *Redis) checkSchema(ctx context.Context) error {
	key := s.key(keyRedisSchema)
	if err := s.rdb.SetNX(ctx, key, schemaVersion, 0).Err(); err != nil {
		return fmt.Errorf("write schema version %s: %w", key, err)
	}
	v, err := s.rdb.Get(ctx, key).Result()
	if err != nil {
		return fmt.Errorf("read schema version %s: %w", key, err)
	}
	if v != schemaVersion {
		return fmt.Errorf("key %s holds schema version %q, this program knows %q; use another prefix or database", key, v, schemaVersion)
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
	data, err := c.Get(ctx, key).Bytes()
	switch {
	case errors.Is(err, redis.Nil):
		return ErrNotFound
	case err != nil:
		return fmt.Errorf("read %s: %w", key, err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decode %s: %w", key, err)
	}
	return nil
}

// setRequest queues the writes that save request r, encoded as data, and
// keep its index in step.
func (s *Redis) setRequest(ctx context.Context, p redis.Pipeliner, r Request, data []byte) {
	p.Set(ctx, s.key(keyRedisRequest+r.ID), data, 0)
	p.ZAdd(ctx, s.key(keyRedisRequests), redis.Z{Score: float64(r.CreatedAt.UnixMilli()), Member: r.ID})
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
			s.setRequest(ctx, p, r, data)
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
	if err := redisGetJSON(ctx, s.rdb, s.key(keyRedisRequest+id), &r); err != nil {
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
	if err := checkTransition(id, from, to); err != nil {
		return Request{}, err
	}
	ctx, cancel := s.ctx()
	defer cancel()
	key := s.key(keyRedisRequest + id)
	var out Request
	err := s.atomically(ctx, func(tx *redis.Tx) error {
		var r Request
		if err := redisGetJSON(ctx, tx, key, &r); err != nil {
			return err
		}
		if err := applyTransition(&r, id, from, to, user, s.now, mutate); err != nil {
			return err
		}
		var err error
		out, err = s.saveRequest(ctx, tx, r)
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

// saveRequest writes r, whose key tx watches, and its index in one
// MULTI/EXEC, and returns r as stored.
func (s *Redis) saveRequest(ctx context.Context, tx *redis.Tx, r Request) (Request, error) {
	data, err := json.Marshal(r)
	if err != nil {
		return Request{}, fmt.Errorf("encode: %w", err)
	}
	if _, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
		s.setRequest(ctx, p, r, data)
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
		if err := redisGetJSON(ctx, tx, key, &r); err != nil {
			return err
		}
		if err := applyUpdate(&r, id, s.now, mutate); err != nil {
			return err
		}
		var err error
		out, err = s.saveRequest(ctx, tx, r)
		return err
	}, key)
	if err != nil {
		return Request{}, fmt.Errorf("update request %s: %w", id, err)
	}
	return out, nil
}

// List returns the requests in any of the given states, or all requests when
// none is given, ordered by CreatedAt (then ID).
func (s *Redis) List(states ...State) ([]Request, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	ids, err := s.rdb.ZRange(ctx, s.key(keyRedisRequests), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("list requests: read %s: %w", s.key(keyRedisRequests), err)
	}
	var out []Request
	err = s.mget(ctx, keyRedisRequest, ids, func(id string, data []byte) error {
		var r Request
		if err := json.Unmarshal(data, &r); err != nil {
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

// mget reads the keys name+id for ids, in chunks, and calls fn for each
// that exists. An ID whose record is missing is skipped: no record is ever
// deleted, so that can only be an index entry seen before or after the
// record it indexes changed.
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
		switch err := redisGetJSON(ctx, tx, key, &old); {
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
	if err := redisGetJSON(ctx, s.rdb, s.key(keyRedisJob+id), &j); err != nil {
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
		if err := redisGetJSON(ctx, tx, key, &j); err != nil {
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
		if err := json.Unmarshal(data, &j); err != nil {
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
