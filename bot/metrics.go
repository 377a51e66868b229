package bot

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the bot's Prometheus metrics. Those about GeminiDB carry the
// target first: Batches (target, result), Jobs (target, status) and
// APILatency (target, call, result).
type Metrics struct {
	Commands   *prometheus.CounterVec   // by outcome
	Batches    *prometheus.CounterVec   // batch calls by target and result
	Jobs       *prometheus.CounterVec   // jobs by target and final status
	Reconnects prometheus.Counter       // Socket Mode redials
	AckLatency prometheus.Histogram     // seconds from event to ack
	APILatency *prometheus.HistogramVec // by target, call and result
}

// NewMetrics creates the metrics and registers them with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "geminidb_patch_commands_total", Help: "Slash commands by outcome.",
		}, []string{"outcome"}),
		Batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "geminidb_patch_batch_calls_total", Help: "Batch upgrade calls by result (ok: the API answered 202; error: it did not).",
		}, []string{"target", "result"}),
		Jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "geminidb_patch_jobs_total", Help: "Followed patch jobs by final status (Completed, Failed, unfollowed).",
		}, []string{"target", "status"}),
		Reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "geminidb_patch_socket_reconnects_total", Help: "Socket Mode connections redialled after being lost.",
		}),
		AckLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "geminidb_patch_ack_latency_seconds", Help: "Time from receiving a Socket Mode envelope to acking it.",
			Buckets: []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5},
		}),
		APILatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "geminidb_patch_api_latency_seconds", Help: "GeminiDB API call latency by target, call and result.",
			Buckets: prometheus.DefBuckets,
		}, []string{"target", "call", "result"}),
	}
	if reg != nil {
		reg.MustRegister(m.Commands, m.Batches, m.Jobs, m.Reconnects, m.AckLatency, m.APILatency)
	}
	return m
}

// engineMetrics counts what the engine does in m.
type engineMetrics struct{ m *Metrics }

// BatchCalled counts a batch call.
func (e engineMetrics) BatchCalled(target, result string) {
	e.m.Batches.WithLabelValues(target, result).Inc()
}

// JobEnded counts a job that ended.
func (e engineMetrics) JobEnded(target, status string) {
	e.m.Jobs.WithLabelValues(target, status).Inc()
}
