package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// PutJob stores j, replacing any job with the same ID.
func (s *Redis) PutJob(ctx context.Context, j Job) error {
	if j.ID == "" {
		return errors.New("put job: empty ID")
	}
	ctx, cancel := s.opCtx(ctx)
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
		s.setJob(ctx, p, old, j, data)
		return nil
	})
	if err != nil {
		return Job{}, err
	}
	if durable(ctx) {
		s.waitReplica(ctx, tx)
	}
	var out Job
	if err := json.Unmarshal(data, &out); err != nil {
		return Job{}, fmt.Errorf("decode: %w", err)
	}
	return out, nil
}

// setJob queues the writes that save job j, encoded as data, and keep its
// indexes in step with the change from old (nil for a new job).
func (s *Redis) setJob(ctx context.Context, p redis.Pipeliner, old *Job, j Job, data []byte) {
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
	s.indexJob(ctx, p, j)
}

// Job returns the job with the given ID, or an error wrapping ErrNotFound.
func (s *Redis) Job(ctx context.Context, id string) (Job, error) {
	ctx, cancel := s.opCtx(ctx)
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
func (s *Redis) UpdateJob(ctx context.Context, id string, mutate func(*Job) error) (Job, error) {
	ctx, cancel := s.opCtx(ctx)
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
func (s *Redis) Jobs(ctx context.Context, requestID string) ([]Job, error) {
	out, err := s.jobsIn(ctx, s.key(keyRedisRequestJobs+requestID), func(j Job) bool { return j.RequestID == requestID })
	if err != nil {
		return nil, fmt.Errorf("list jobs of request %s: %w", requestID, err)
	}
	return out, nil
}

// ActiveJobs returns the jobs still followed (see Job.Active), ordered by
// SubmittedAt, then ID.
func (s *Redis) ActiveJobs(ctx context.Context) ([]Job, error) {
	out, err := s.jobsIn(ctx, s.key(keyRedisActiveJobs), Job.Active)
	if err != nil {
		return nil, fmt.Errorf("list active jobs: %w", err)
	}
	return out, nil
}

// jobsIn returns the jobs whose IDs are in the set at key and for which
// keep holds, sorted. keep rechecks what the set says, since a job can
// change between reading the set and reading the job.
func (s *Redis) jobsIn(ctx context.Context, key string, keep func(Job) bool) ([]Job, error) {
	ctx, cancel := s.opCtx(ctx)
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
