package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/ops"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
)

// How often a replica registers itself in the store, and for how long a
// registration counts: three missed heartbeats and it is taken for gone.
const (
	replicaHeartbeat = 10 * time.Second
	replicaTTL       = 3 * replicaHeartbeat
)

// RollingUpgrades is what a store does for rolling deploys: the schema
// fence (a newer release migrated the store, so this replica must stop
// writing) and the registry of the replicas and their versions.
type RollingUpgrades interface {
	Fenced() <-chan struct{}
	FenceError() error
	Register(ctx context.Context, id, version string, ttl time.Duration) error
	Replicas(ctx context.Context) ([]store.Replica, error)
	Deregister(ctx context.Context, id string) error
}

// newReplicaID names this process in the registry: the host name (the pod's
// name on Kubernetes) and a random suffix, so that two processes on one
// host are told apart.
func newReplicaID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "bot"
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return host + "-" + hex.EncodeToString(b)
}

// replicaMetrics is the gauge of the live replicas by version.
func replicaMetrics(reg prometheus.Registerer) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "geminidb_patch_replicas",
		Help: "Live bot replicas on this store by version and store schema, as registered in the store; more than one series means a mixed set (a rolling deploy in progress, or stuck).",
	}, []string{"version", "schema"})
	reg.MustRegister(g)
	return g
}

// mixedVersions returns the live replicas' versions, and an error saying
// they are mixed when there is more than one.
func mixedVersions(ctx context.Context, st RollingUpgrades) ([]store.Replica, error) {
	rs, err := st.Replicas(ctx)
	if err != nil {
		return nil, err
	}
	if vs := store.Versions(rs); len(vs) > 1 {
		return rs, fmt.Errorf("mixed versions: %d replicas run %s", len(rs), strings.Join(vs, ", "))
	}
	return rs, nil
}

// replicasCheck is the readiness check of the registry: always ready (a
// mixed set is normal during a rolling deploy), but /readyz says so.
func (m *Main) replicasCheck(ctx context.Context) error {
	rs, err := mixedVersions(ctx, m.Store)
	m.observeReplicas(rs)
	if err != nil {
		return ops.Warn(err)
	}
	return nil
}

// schemaCheck is not ready once a newer release migrated the store.
func (m *Main) schemaCheck(context.Context) error {
	if err := m.Store.FenceError(); err != nil {
		return err
	}
	return nil
}

// observeReplicas sets the replicas gauge from rs.
func (m *Main) observeReplicas(rs []store.Replica) {
	if m.replicaGauge == nil || rs == nil {
		return
	}
	m.replicaGauge.Reset()
	for _, r := range rs {
		m.replicaGauge.WithLabelValues(r.Version, r.Schema).Inc()
	}
}

// heartbeat registers this replica until ctx ends, then deregisters it.
func (m *Main) heartbeat(ctx context.Context) {
	beat := func() {
		if err := m.Store.Register(ctx, m.replicaID, version, replicaTTL); err != nil && ctx.Err() == nil {
			m.Log.Warn().Err(err).Msg("cannot register this replica in the store")
			return
		}
		rs, err := mixedVersions(ctx, m.Store)
		m.observeReplicas(rs)
		if err != nil && ctx.Err() == nil && !errors.Is(err, context.Canceled) {
			m.Log.Info().Err(err).Msg("replicas on this store")
		}
	}
	beat()
	t := time.NewTicker(replicaHeartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if err := m.Store.Deregister(dctx, m.replicaID); err != nil {
				m.Log.Warn().Err(err).Msg("cannot deregister this replica from the store")
			}
			return
		case <-t.C:
			beat()
		}
	}
}

// fencedError is what Run returns once a write found a newer schema: the
// replica stops taking work, and its restarts refuse to open the store,
// until it runs the new release.
func (m *Main) fencedError() error {
	return fmt.Errorf("stopping: a newer release of the bot migrated the store; this replica (version %s, store schema %s) must be upgraded: %w", version, store.SchemaVersion, m.Store.FenceError())
}

// replicasLine is doctor's line about the replicas registered on a Redis
// store: which versions run, and a warning when they are mixed. It says
// nothing when the store cannot be opened (the store check said why).
func replicasLine(ctx context.Context, target string) string {
	st, err := store.OpenRedis(ctx, target)
	if err != nil {
		return ""
	}
	defer st.Close()
	rs, err := mixedVersions(ctx, st)
	switch {
	case err != nil && rs != nil:
		return fmt.Sprintf("WARN  %-20s %v; a rolling deploy in progress, or one that is stuck: the older replicas stop writing once they meet the newer schema", "replicas", err)
	case err != nil:
		return fmt.Sprintf("WARN  %-20s cannot read the replica registry: %v", "replicas", err)
	case len(rs) == 0:
		return fmt.Sprintf("PASS  %-20s none running on this store", "replicas")
	}
	return fmt.Sprintf("PASS  %-20s %d running, all %s", "replicas", len(rs), strings.Join(store.Versions(rs), ""))
}
