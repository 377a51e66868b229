package store

import "context"

// durableKey is the context key of WithDurable.
type durableKey struct{}

// WithDurable returns a ctx whose writes must survive the loss of the
// machine or of the Redis primary that took them, for the writes after
// which something is sent to the cloud: the claim of a wave and the write
// before a batch call (BeginBatch). On Redis every write made with it is
// followed, on the connection that made it, by WAIT for one replica (see
// RedisOptions.WaitTimeout), when the server has replicas; on Bolt it
// makes a write that would otherwise skip fsync (a plan's Create) sync.
// TransitionLock and Unlock always behave as if given it.
func WithDurable(ctx context.Context) context.Context {
	return context.WithValue(ctx, durableKey{}, true)
}

// durable reports whether ctx came from WithDurable.
func durable(ctx context.Context) bool {
	v, _ := ctx.Value(durableKey{}).(bool)
	return v
}
