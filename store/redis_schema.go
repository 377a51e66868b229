package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
)

// prepareSchema brings the prefix to this schema when the store is opened,
// after the PING: checkSchema (bounded by redisOpenTimeout), then
// migrateLegacy (bounded by redisMigrateTimeout). Every way of opening a
// Redis store (a URL, Sentinel) calls it before the store is used.
func (s *Redis) prepareSchema(ctx context.Context) error {
	openCtx, cancel := context.WithTimeout(ctx, redisOpenTimeout)
	defer cancel()
	if err := s.checkSchema(openCtx); err != nil {
		return err
	}
	migrateCtx, cancel := context.WithTimeout(ctx, redisMigrateTimeout)
	defer cancel()
	return s.migrateLegacy(migrateCtx)
}

// checkSchema writes the layout version under a new prefix, refuses one
// written by a newer release with a *SchemaError, and sets one written by
// an older release (1 or 2) to this one's, before its records are moved:
// from then on releases of schema 2 refuse to open the prefix.
func (s *Redis) checkSchema(ctx context.Context) error {
	key := s.prefix + keyRedisSchema
	if err := s.rdb.SetNX(ctx, key, schemaVersion, 0).Err(); err != nil {
		return fmt.Errorf("write schema version %s: %w", key, err)
	}
	return s.rdb.Watch(ctx, func(tx *redis.Tx) error {
		v, err := tx.Get(ctx, key).Result()
		if err != nil {
			return fmt.Errorf("read schema version %s: %w", key, err)
		}
		switch v {
		case schemaVersion:
			return nil
		case schemaVersion1, schemaVersion2:
			_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Set(ctx, key, schemaVersion, 0)
				return nil
			})
			if err != nil {
				return fmt.Errorf("write schema version %s: %w", key, err)
			}
			return nil
		}
		return fmt.Errorf("%w; use that release, or another prefix or database", &SchemaError{Where: "key " + key, Found: v, Want: schemaVersion})
	}, key)
}

// fenced wraps the transaction fn so that it first reads the schema
// version, which atomically watches too: if it is not this program's, fn
// does not run and the store is fenced.
func (s *Redis) fenced(ctx context.Context, fn func(tx *redis.Tx) error) func(tx *redis.Tx) error {
	key := s.prefix + keyRedisSchema
	return func(tx *redis.Tx) error {
		v, err := tx.Get(ctx, key).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("read schema version %s: %w", key, err)
		}
		if v != schemaVersion {
			return s.trip(&SchemaError{Where: "key " + key, Found: v, Want: schemaVersion})
		}
		return fn(tx)
	}
}

// legacyKey is the name of a key of schemas 1 and 2, directly under the
// prefix.
func (s *Redis) legacyKey(name string) string { return s.prefix + name }

// migrateLegacy moves every request and job written under the key space of
// schemas 1 and 2 into this schema's, each request with its jobs, so that a
// release of schema 2 finds nothing it could misread. Each record is moved
// in one transaction that watches it where it was and where it goes, and
// writes it with its indexes and deletes it from the old space: a replica
// of schema 2 changing it meanwhile makes the move run again on the new
// value, and several replicas of this release migrating at once move each
// record once. A record already in the new space stays as it is there.
func (s *Redis) migrateLegacy(ctx context.Context) error {
	ids, err := s.rdb.ZRange(ctx, s.legacyKey(keyRedisRequests), 0, -1).Result()
	if err != nil {
		return fmt.Errorf("migrate to schema %s: read %s: %w", schemaVersion, s.legacyKey(keyRedisRequests), err)
	}
	for _, id := range ids {
		if err := s.moveLegacyRequest(ctx, id); err != nil {
			return fmt.Errorf("migrate to schema %s: request %s: %w", schemaVersion, id, err)
		}
	}
	// Active jobs whose request is gone are still followed.
	jobs, err := s.rdb.SMembers(ctx, s.legacyKey(keyRedisActiveJobs)).Result()
	if err != nil {
		return fmt.Errorf("migrate to schema %s: read %s: %w", schemaVersion, s.legacyKey(keyRedisActiveJobs), err)
	}
	for _, id := range jobs {
		if err := s.moveLegacyJob(ctx, id); err != nil {
			return fmt.Errorf("migrate to schema %s: job %s: %w", schemaVersion, id, err)
		}
	}
	return nil
}

// moveLegacyRequest moves request id and its jobs from the old key space.
// The jobs go first, so that a replica of this release never finds the
// request submitted without its jobs (which would read as "no job was
// started"), and again after the request, for a job the old release added
// meanwhile.
func (s *Redis) moveLegacyRequest(ctx context.Context, id string) error {
	if err := s.moveLegacyJobsOf(ctx, id); err != nil {
		return err
	}
	oldKey, newKey := s.legacyKey(keyRedisRequest+id), s.key(keyRedisRequest+id)
	err := s.atomically(ctx, func(tx *redis.Tx) error {
		data, err := tx.Get(ctx, oldKey).Bytes()
		if errors.Is(err, redis.Nil) {
			// Only its index entry was left.
			_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.ZRem(ctx, s.legacyKey(keyRedisRequests), id)
				return nil
			})
			return err
		} else if err != nil {
			return fmt.Errorf("read %s: %w", oldKey, err)
		}
		var r Request
		if err := json.Unmarshal(data, &r); err != nil {
			return fmt.Errorf("decode %s: %w", oldKey, err)
		}
		n, err := tx.Exists(ctx, newKey).Result()
		if err != nil {
			return fmt.Errorf("read %s: %w", newKey, err)
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			if n == 0 {
				s.setRequest(ctx, p, nil, r, data)
			}
			p.Del(ctx, oldKey)
			p.ZRem(ctx, s.legacyKey(keyRedisRequests), id)
			p.ZRem(ctx, s.legacyKey(keyRedisState+string(r.State)), id)
			return nil
		})
		return err
	}, oldKey, newKey)
	if err != nil {
		return err
	}
	return s.moveLegacyJobsOf(ctx, id)
}

// moveLegacyJobsOf moves the jobs of request id from the old key space.
func (s *Redis) moveLegacyJobsOf(ctx context.Context, id string) error {
	oldJobs := s.legacyKey(keyRedisRequestJobs + id)
	jobs, err := s.rdb.SMembers(ctx, oldJobs).Result()
	if err != nil {
		return fmt.Errorf("read %s: %w", oldJobs, err)
	}
	for _, j := range jobs {
		if err := s.moveLegacyJob(ctx, j); err != nil {
			return fmt.Errorf("job %s: %w", j, err)
		}
	}
	return nil
}

// moveLegacyJob moves job id from the old key space.
func (s *Redis) moveLegacyJob(ctx context.Context, id string) error {
	oldKey, newKey := s.legacyKey(keyRedisJob+id), s.key(keyRedisJob+id)
	return s.atomically(ctx, func(tx *redis.Tx) error {
		var j Job
		err := redisGetJSON(ctx, tx, oldKey, &j)
		if errors.Is(err, ErrNotFound) {
			_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.SRem(ctx, s.legacyKey(keyRedisActiveJobs), id)
				return nil
			})
			return err
		} else if err != nil {
			return err
		}
		data, err := json.Marshal(j)
		if err != nil {
			return fmt.Errorf("encode %s: %w", oldKey, err)
		}
		n, err := tx.Exists(ctx, newKey).Result()
		if err != nil {
			return fmt.Errorf("read %s: %w", newKey, err)
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			if n == 0 {
				s.setJob(ctx, p, nil, j, data)
			}
			p.Del(ctx, oldKey)
			p.SRem(ctx, s.legacyKey(keyRedisActiveJobs), id)
			p.SRem(ctx, s.legacyKey(keyRedisRequestJobs+j.RequestID), id)
			return nil
		})
		return err
	}, oldKey, newKey)
}

// Register records this process in the replica registry, shared by the
// replicas on this prefix whatever their schema: replica id runs version
// and writes this schema, until ttl from now. Replicas register again
// before their ttl runs out; one that stops doing so drops out of Replicas.
func (s *Redis) Register(ctx context.Context, id, version string, ttl time.Duration) error {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	data, err := json.Marshal(Replica{ID: id, Version: version, Schema: schemaVersion, Expires: time.Now().Add(ttl)})
	if err != nil {
		return fmt.Errorf("register replica %s: %w", id, err)
	}
	key := s.prefix + keyRedisReplicas
	if err := s.rdb.HSet(ctx, key, id, data).Err(); err != nil {
		return fmt.Errorf("register replica %s in %s: %w", id, key, err)
	}
	return nil
}

// Replicas returns the registered replicas whose registration has not
// expired, by ID, and deletes the expired ones.
func (s *Redis) Replicas(ctx context.Context) ([]Replica, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	key := s.prefix + keyRedisReplicas
	all, err := s.rdb.HGetAll(ctx, key).Result()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	now := time.Now()
	var live []Replica
	var gone []string
	for id, data := range all {
		var r Replica
		if err := json.Unmarshal([]byte(data), &r); err != nil || now.After(r.Expires) {
			gone = append(gone, id)
			continue
		}
		live = append(live, r)
	}
	if len(gone) > 0 {
		// Best effort: a replica re-registering meanwhile registers again.
		_ = s.rdb.HDel(ctx, key, gone...).Err()
	}
	slices.SortFunc(live, func(a, b Replica) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return live, nil
}

// Deregister removes replica id from the registry, as it stops.
func (s *Redis) Deregister(ctx context.Context, id string) error {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	key := s.prefix + keyRedisReplicas
	if err := s.rdb.HDel(ctx, key, id).Err(); err != nil {
		return fmt.Errorf("deregister replica %s from %s: %w", id, key, err)
	}
	return nil
}
