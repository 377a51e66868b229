package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// More key names under the prefix (see the list in redis.go).
const (
	keyRedisOpenPlans    = "open-plans:"    // + requester: sorted set of the IDs of their plans waiting for a decision, score ExpiresAt in Unix µs
	keyRedisDue          = "due"            // sorted set: IDs of the requests with a DueAt, score DueAt in Unix µs
	keyRedisJobsDue      = "jobs-due"       // sorted set: IDs of the active jobs, score NextPoll in Unix µs
	keyRedisLock         = "lock:"          // + lock key (LockKey): string, the ID of the request holding it
	keyRedisRequestLocks = "request-locks:" // + request ID: set of the lock keys it holds
	keyRedisIndexes      = "indexes"        // string: redisIndexesVersion once the indexes above are built
)

// redisIndexesVersion marks a prefix whose open-plan and due indexes are
// built; OpenRedisWith builds them for a prefix without it.
const redisIndexesVersion = "due-1"

// DefaultWaitTimeout is how long a durable write (WithDurable) waits for
// a replica to acknowledge it when RedisOptions.WaitTimeout is 0.
const DefaultWaitTimeout = 200 * time.Millisecond

// replicasCheckEvery is how long the answer to "does the server have
// replicas?" is kept before INFO is asked again.
const replicasCheckEvery = 10 * time.Second

// indexRequest queues the writes that keep the open-plan and due indexes
// of r in step; old is the request as it was (nil for a new one).
func (s *Redis) indexRequest(ctx context.Context, p redis.Pipeliner, old *Request, r Request) {
	if old != nil && old.Requester != r.Requester && openPlan(*old) {
		p.ZRem(ctx, s.key(keyRedisOpenPlans+old.Requester), r.ID)
	}
	if openPlan(r) {
		p.ZAdd(ctx, s.key(keyRedisOpenPlans+r.Requester), redis.Z{Score: usScore(r.ExpiresAt), Member: r.ID})
	} else if old == nil || openPlan(*old) {
		p.ZRem(ctx, s.key(keyRedisOpenPlans+r.Requester), r.ID)
	}
	if t := DueAt(r); !t.IsZero() {
		p.ZAdd(ctx, s.key(keyRedisDue), redis.Z{Score: usScore(t), Member: r.ID})
	} else if old == nil || !DueAt(*old).IsZero() {
		p.ZRem(ctx, s.key(keyRedisDue), r.ID)
	}
}

// indexJob queues the write that keeps the due-jobs index of j in step.
func (s *Redis) indexJob(ctx context.Context, p redis.Pipeliner, j Job) {
	if t, ok := jobDue(j); ok {
		p.ZAdd(ctx, s.key(keyRedisJobsDue), redis.Z{Score: usScore(t), Member: j.ID})
	} else {
		p.ZRem(ctx, s.key(keyRedisJobsDue), j.ID)
	}
}

// OpenPlans counts the plans of user (a Slack user ID) waiting for a
// decision (planned or awaiting approval) that expire after now: one
// ZCOUNT of the user's sorted set, no record read.
func (s *Redis) OpenPlans(ctx context.Context, user string, now time.Time) (int, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	key := s.key(keyRedisOpenPlans + user)
	n, err := s.rdb.ZCount(ctx, key, "("+strconv.FormatInt(now.UnixMicro(), 10), "+inf").Result()
	if err != nil {
		return 0, fmt.Errorf("count open plans of %s: read %s: %w", user, key, err)
	}
	return int(n), nil
}

// Due returns at most max requests (all, if max ≤ 0) whose DueAt is at or
// before now, earliest first: the work housekeeping has to do now. It
// reads only those requests, through the due index. A request stays due
// until a write moves its DueAt (a new state, WakeAt, a renewed lease).
func (s *Redis) Due(ctx context.Context, now time.Time, max int) ([]Request, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	ids, err := s.dueIDs(ctx, keyRedisDue, now, max)
	if err != nil {
		return nil, fmt.Errorf("list requests due by %s: %w", now.Format(time.RFC3339Nano), err)
	}
	var out []Request
	err = s.mget(ctx, keyRedisRequest, ids, func(id string, data []byte) error {
		var r Request
		if err := s.decodes.decode(data, &r); err != nil {
			return fmt.Errorf("decode request %q: %w", id, err)
		}
		if t := DueAt(r); !t.IsZero() && !t.After(now) {
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list requests due by %s: %w", now.Format(time.RFC3339Nano), err)
	}
	return out, nil
}

// DueJobs returns at most max active jobs (all, if max ≤ 0) whose NextPoll
// is at or before now (a zero NextPoll: due at once), earliest first. It
// reads only those jobs, through the due-jobs index.
func (s *Redis) DueJobs(ctx context.Context, now time.Time, max int) ([]Job, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	ids, err := s.dueIDs(ctx, keyRedisJobsDue, now, max)
	if err != nil {
		return nil, fmt.Errorf("list jobs due by %s: %w", now.Format(time.RFC3339Nano), err)
	}
	var out []Job
	err = s.mget(ctx, keyRedisJob, ids, func(id string, data []byte) error {
		var j Job
		if err := s.decodes.decode(data, &j); err != nil {
			return fmt.Errorf("decode job %q: %w", id, err)
		}
		if t, ok := jobDue(j); ok && !t.After(now) {
			out = append(out, j)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list jobs due by %s: %w", now.Format(time.RFC3339Nano), err)
	}
	return out, nil
}

// dueIDs reads the IDs of a due index scored at or before now, earliest
// first, at most max unless max ≤ 0.
func (s *Redis) dueIDs(ctx context.Context, name string, now time.Time, max int) ([]string, error) {
	args := redis.ZRangeArgs{Key: s.key(name), Start: "-inf", Stop: strconv.FormatInt(now.UnixMicro(), 10), ByScore: true}
	if max > 0 {
		args.Count = int64(max)
	}
	ids, err := s.rdb.ZRangeArgs(ctx, args).Result()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", s.key(name), err)
	}
	return ids, nil
}

// buildIndexes builds the open-plan and due indexes of a prefix that
// lacks them (keyRedisIndexes), from its requests and jobs, a chunk at a
// time, each chunk in a transaction watching its records so that a record
// another replica changes meanwhile is indexed as it is after the change;
// then it marks the prefix. Several replicas may build at once: the
// result is the same.
func (s *Redis) buildIndexes(ctx context.Context) error {
	v, err := s.rdb.Get(ctx, s.key(keyRedisIndexes)).Result()
	switch {
	case err == nil && v == redisIndexesVersion:
		return nil
	case err != nil && !errors.Is(err, redis.Nil):
		return fmt.Errorf("read %s: %w", s.key(keyRedisIndexes), err)
	}
	ids, err := s.rdb.ZRange(ctx, s.key(keyRedisRequests), 0, -1).Result()
	if err != nil {
		return fmt.Errorf("build indexes: read %s: %w", s.key(keyRedisRequests), err)
	}
	if err := s.indexChunks(ctx, keyRedisRequest, ids, func(p redis.Pipeliner, id string, data []byte) error {
		var r Request
		if err := json.Unmarshal(data, &r); err != nil {
			return fmt.Errorf("decode request %q: %w", id, err)
		}
		s.indexRequest(ctx, p, nil, r)
		return nil
	}); err != nil {
		return fmt.Errorf("build indexes: %w", err)
	}
	jobIDs, err := s.rdb.SMembers(ctx, s.key(keyRedisActiveJobs)).Result()
	if err != nil {
		return fmt.Errorf("build indexes: read %s: %w", s.key(keyRedisActiveJobs), err)
	}
	if err := s.indexChunks(ctx, keyRedisJob, jobIDs, func(p redis.Pipeliner, id string, data []byte) error {
		var j Job
		if err := json.Unmarshal(data, &j); err != nil {
			return fmt.Errorf("decode job %q: %w", id, err)
		}
		s.indexJob(ctx, p, j)
		return nil
	}); err != nil {
		return fmt.Errorf("build indexes: %w", err)
	}
	if err := s.rdb.Set(ctx, s.key(keyRedisIndexes), redisIndexesVersion, 0).Err(); err != nil {
		return fmt.Errorf("build indexes: write %s: %w", s.key(keyRedisIndexes), err)
	}
	return nil
}

// indexChunks reads the records name+id of ids a chunk at a time, each
// chunk watched, and queues index writes for each with fn.
func (s *Redis) indexChunks(ctx context.Context, name string, ids []string, fn func(p redis.Pipeliner, id string, data []byte) error) error {
	for chunk := range slices.Chunk(ids, redisMGetChunk) {
		keys := make([]string, len(chunk))
		for i, id := range chunk {
			keys[i] = s.key(name + id)
		}
		err := s.atomically(ctx, func(tx *redis.Tx) error {
			vals, err := tx.MGet(ctx, keys...).Result()
			if err != nil {
				return fmt.Errorf("read %s…: %w", keys[0], err)
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				for i, v := range vals {
					if str, ok := v.(string); ok {
						if err := fn(p, chunk[i], []byte(str)); err != nil {
							return err
						}
					}
				}
				return nil
			})
			return err
		}, keys...)
		if err != nil {
			return err
		}
	}
	return nil
}

// waitReplica waits, on the connection of tx (WAIT counts the writes of
// its own connection), until one replica has acknowledged the writes made
// so far, for at most the WaitTimeout, when the server has replicas. It
// never fails the write: the write is done on the primary either way; a
// replica that did not acknowledge in time is counted (WaitsShort).
func (s *Redis) waitReplica(ctx context.Context, tx *redis.Tx) {
	if !s.hasReplicas(ctx) {
		return
	}
	s.waits.Add(1)
	n, err := tx.Do(ctx, "WAIT", 1, s.waitTimeout.Milliseconds()).Int64()
	if err != nil || n < 1 {
		s.waitsShort.Add(1)
	}
}

// hasReplicas reports whether the server has a connected replica, asked
// with INFO replication at most every replicasCheckEvery. An error counts
// as none.
func (s *Redis) hasReplicas(ctx context.Context) bool {
	now := time.Now()
	if c := s.replicas.Load(); c != nil && now.Before(c.until) {
		return c.n > 0
	}
	n := 0
	if info, err := s.rdb.Info(ctx, "replication").Result(); err == nil {
		for line := range strings.Lines(info) {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "connected_slaves:"); ok {
				n, _ = strconv.Atoi(v)
			}
		}
	}
	s.replicas.Store(&replicaCount{n: n, until: now.Add(replicasCheckEvery)})
	return n > 0
}

// replicaCount is the last answer of INFO replication, and until when it
// is trusted.
type replicaCount struct {
	n     int
	until time.Time
}

// Waits returns how many durable writes waited for a replica (WAIT) and
// how many of them were not acknowledged by one within the timeout.
func (s *Redis) Waits() (waited, short int64) { return s.waits.Load(), s.waitsShort.Load() }

// jsonEncode encodes a record.
func jsonEncode(v any) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	return data, nil
}

// jsonDecode decodes a record as stored.
func jsonDecode(data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	return nil
}
