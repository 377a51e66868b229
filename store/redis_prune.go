package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Prune deletes at most max requests that are in a final state (see
// State.Final), were last updated before before and are no longer live
// (no job of theirs is still followed, they hold no instance lock), oldest
// first, with their jobs and index entries, and returns how many it
// deleted. Live requests are passed over (their index entries are read
// again on each call, their records are not). It reads
// the oldest entries of the final states' indexes (at most max of each)
// and then each candidate, so its cost follows what it deletes, not how
// much the database holds. Each request goes in its own transaction,
// watching the request and its set of jobs, so a request that changed
// since it was read is looked at again, and replicas may prune at the same
// time. Call it again until it returns less than max to delete everything
// due; a max of 0 or less deletes nothing. Requests in other states are
// never deleted.
func (s *Redis) Prune(ctx context.Context, before time.Time, max int) (int, error) {
	if max <= 0 {
		return 0, nil
	}
	deleted := 0
	passed := map[string]bool{} // live or changed requests left alone
	for deleted < max {
		cands, err := s.pruneCandidates(ctx, before, max-deleted+len(passed))
		if err != nil {
			return deleted, fmt.Errorf("prune requests final before %s: %w", before.Format(time.RFC3339Nano), err)
		}
		cands = slices.DeleteFunc(cands, func(c pruneCandidate) bool { return passed[c.id] })
		if len(cands) == 0 {
			break
		}
		for _, c := range cands {
			if deleted == max {
				break
			}
			ok, err := s.pruneRequest(ctx, c.id, c.state, before)
			if err != nil {
				return deleted, fmt.Errorf("prune requests final before %s: request %s: %w", before.Format(time.RFC3339Nano), c.id, err)
			}
			if ok {
				deleted++
			} else {
				passed[c.id] = true
			}
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
func (s *Redis) pruneCandidates(ctx context.Context, before time.Time, max int) ([]pruneCandidate, error) {
	ctx, cancel := s.opCtx(ctx)
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
func (s *Redis) pruneRequest(ctx context.Context, id string, st State, before time.Time) (bool, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	key, jobsKey, locksKey := s.key(keyRedisRequest+id), s.key(keyRedisRequestJobs+id), s.key(keyRedisRequestLocks+id)
	deleted := false
	err := s.atomically(ctx, func(tx *redis.Tx) error {
		deleted = false
		jobIDs, live, err := s.live(ctx, tx, jobsKey, locksKey)
		if err != nil || live {
			return err
		}
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
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Del(ctx, key, jobsKey)
			p.ZRem(ctx, s.key(keyRedisRequests), id)
			p.ZRem(ctx, s.stateKey(st), id)
			p.ZRem(ctx, s.key(keyRedisDue), id)
			if openPlan(r) {
				p.ZRem(ctx, s.key(keyRedisOpenPlans+r.Requester), id)
			}
			if len(jobIDs) > 0 {
				keys := make([]string, len(jobIDs))
				members := make([]any, len(jobIDs))
				for i, jid := range jobIDs {
					keys[i], members[i] = s.key(keyRedisJob+jid), jid
				}
				p.Del(ctx, keys...)
				p.SRem(ctx, s.key(keyRedisActiveJobs), members...)
				p.ZRem(ctx, s.key(keyRedisJobsDue), members...)
			}
			return nil
		})
		deleted = err == nil
		return err
	}, key, jobsKey, locksKey)
	return deleted, err
}

// live reads, in tx (which watches jobsKey and locksKey), the job IDs of a
// request and whether it is live: it holds a lock, or one of its jobs is
// active. It watches the jobs' keys too, so that a job that becomes active
// again before the delete makes the transaction run again.
func (s *Redis) live(ctx context.Context, tx *redis.Tx, jobsKey, locksKey string) ([]string, bool, error) {
	n, err := tx.SCard(ctx, locksKey).Result()
	if err != nil {
		return nil, false, fmt.Errorf("read %s: %w", locksKey, err)
	}
	if n > 0 {
		return nil, true, nil
	}
	jobIDs, err := tx.SMembers(ctx, jobsKey).Result()
	if err != nil {
		return nil, false, fmt.Errorf("read %s: %w", jobsKey, err)
	}
	if len(jobIDs) == 0 {
		return nil, false, nil
	}
	keys := make([]string, len(jobIDs))
	members := make([]any, len(jobIDs))
	for i, jid := range jobIDs {
		keys[i], members[i] = s.key(keyRedisJob+jid), jid
	}
	if err := tx.Watch(ctx, keys...).Err(); err != nil {
		return nil, false, fmt.Errorf("watch %s…: %w", keys[0], err)
	}
	active, err := tx.SMIsMember(ctx, s.key(keyRedisActiveJobs), members...).Result()
	if err != nil {
		return nil, false, fmt.Errorf("read %s: %w", s.key(keyRedisActiveJobs), err)
	}
	return jobIDs, slices.Contains(active, true), nil
}
