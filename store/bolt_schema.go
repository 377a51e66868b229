package store

import (
	"context"
	"time"

	bolt "go.etcd.io/bbolt"
)

// checkSchema wraps the write fn so that it first reads the file's schema
// version in its own transaction and refuses, fencing the store, when it is
// not this program's. A Bolt file is held by one process, so this cannot
// happen while the file is open today; the check is there so that every
// write, in both backends, passes the same fence.
func (b *Bolt) checkSchema(fn func(*bolt.Tx) error) func(*bolt.Tx) error {
	return func(tx *bolt.Tx) error {
		if v := string(tx.Bucket(bucketMeta).Get(keySchema)); v != schemaVersion {
			return b.trip(&SchemaError{Where: b.path, Found: v, Want: schemaVersion})
		}
		return fn(tx)
	}
}

// Register records this process as replica id running version, for ttl.
// A Bolt file has one process, so the registry is that process, in memory.
func (b *Bolt) Register(_ context.Context, id, version string, ttl time.Duration) error {
	b.replicas.register(id, version, ttl)
	return nil
}

// Replicas returns the registered replicas whose registration has not
// expired: this process, once it registered.
func (b *Bolt) Replicas(context.Context) ([]Replica, error) { return b.replicas.replicas(), nil }

// Deregister removes replica id from the registry.
func (b *Bolt) Deregister(_ context.Context, id string) error {
	b.replicas.deregister(id)
	return nil
}
