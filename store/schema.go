package store

import (
	"fmt"
	"slices"
	"sync"
	"time"
)

// Schema versions of a Bolt file and of a Redis prefix:
//
//   - 1 had no state index and, in bbolt, kept Allow and Remember in the
//     file;
//   - 2 has the indexes Prune and List use;
//   - 3 is 2 with the records of rollouts (canary, waves, windows), which a
//     release of schema 2 would misread: it would send every wave at once,
//     take a scheduled request for one that started nothing, and drop the
//     rollout in its read-modify-writes. In Redis the records of schema 3
//     live under their own key space (prefix + "v3:"), so a schema 2
//     replica still running during a rolling deploy sees an empty store; a
//     Bolt file is held by one process at a time, so there the version bump
//     alone keeps an older release from opening it.
//
// Every write checks the version inside its transaction (Redis watches the
// version key, Bolt reads it in the write transaction): once a newer
// release has bumped it, the writes of this one fail with a *SchemaError,
// and Fenced tells the program to stop taking work.
const (
	schemaVersion1 = "1"
	schemaVersion2 = "2"
	schemaVersion  = "3"
)

// SchemaVersion is the store schema this program reads and writes.
const SchemaVersion = schemaVersion

// SchemaError means the store holds a schema version other than this
// program's: a newer release has migrated it (or, for Found == "", its
// version record is gone). Returned by a write (the store is then fenced,
// see Fenced) or by opening a store a newer release wrote.
type SchemaError struct {
	Where string // the key or file that holds the version
	Found string // the version found there
	Want  string // this program's version
}

// Error says what happened and what to do.
func (e *SchemaError) Error() string {
	if e.Found == "" {
		return fmt.Sprintf("store schema version at %s is missing, this program writes %q: the store was reset or is not this bot's; refusing to write", e.Where, e.Want)
	}
	return fmt.Sprintf("store schema version at %s is %q, this program knows %q: a newer release of the bot has migrated the store; refusing to write (upgrade this replica)", e.Where, e.Found, e.Want)
}

// fence remembers the first write that found a newer schema. Its zero value
// is ready to use; Bolt and Redis embed it.
type fence struct {
	mu  sync.Mutex
	ch  chan struct{}
	err *SchemaError
}

func (f *fence) channel() chan struct{} {
	if f.ch == nil {
		f.ch = make(chan struct{})
	}
	return f.ch
}

// trip fences the store with e (the first error wins) and returns e.
func (f *fence) trip(e *SchemaError) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = e
		close(f.channel())
	}
	return e
}

// Fenced returns a channel that is closed once a write found that a newer
// release migrated the store; the program should then stop taking work.
func (f *fence) Fenced() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.channel()
}

// FenceError returns the *SchemaError that fenced the store, or nil.
func (f *fence) FenceError() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		return nil
	}
	return f.err
}

// Replica is one running bot process as it registered itself in the store
// (see Redis.Register).
type Replica struct {
	ID      string    `json:"id"`
	Version string    `json:"version"` // the program's version
	Schema  string    `json:"schema"`  // the store schema it writes
	Expires time.Time `json:"expires"` // when it counts as gone unless it registers again
}

// Versions returns the distinct versions of rs, sorted; more than one
// means a mixed set (a rolling deploy in progress, or one stuck).
func Versions(rs []Replica) []string {
	var vs []string
	for _, r := range rs {
		v := r.Version + " (schema " + r.Schema + ")"
		if !slices.Contains(vs, v) {
			vs = append(vs, v)
		}
	}
	slices.Sort(vs)
	return vs
}

// selfRegistry is the registry of a store only one process can hold
// (Bolt): that process.
type selfRegistry struct {
	mu   sync.Mutex
	self *Replica
}

// Register records this process as replica id running version, for ttl.
func (r *selfRegistry) register(id, version string, ttl time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.self = &Replica{ID: id, Version: version, Schema: schemaVersion, Expires: time.Now().Add(ttl)}
}

func (r *selfRegistry) replicas() []Replica {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.self == nil || time.Now().After(r.self.Expires) {
		return nil
	}
	return []Replica{*r.self}
}

func (r *selfRegistry) deregister(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.self != nil && r.self.ID == id {
		r.self = nil
	}
}
