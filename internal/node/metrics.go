package node

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/countersign/countersign/internal/store"
)

// metrics are per Server (own registry), so several servers can live in one
// test process.
type metrics struct {
	reg        *prometheus.Registry
	requests   *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	signatures *prometheus.CounterVec
	replays    prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "countersign_http_requests_total", Help: "HTTP requests by route and status.",
		}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "countersign_http_request_duration_seconds",
			Help:    "HTTP request latency by route.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route"}),
		signatures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "countersign_signatures_total", Help: "Signatures committed by format and algorithm.",
		}, []string{"format", "algorithm"}),
		replays: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "countersign_idempotent_replays_total", Help: "Requests answered from a stored response.",
		}),
	}
	m.reg.MustRegister(m.requests, m.latency, m.signatures, m.replays,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// routeMetrics are one route's series, with the 200 counter looked up
// once rather than per request (a label lookup hashes the label values).
type routeMetrics struct {
	m       *metrics
	route   string
	ok      prometheus.Counter
	latency prometheus.Observer
}

func (m *metrics) route(route string) *routeMetrics {
	return &routeMetrics{m: m, route: route,
		ok: m.requests.WithLabelValues(route, "200"), latency: m.latency.WithLabelValues(route)}
}

func (r *routeMetrics) observe(code int, d time.Duration) {
	if code == 0 || code == http.StatusOK {
		r.ok.Inc()
	} else {
		r.m.requests.WithLabelValues(r.route, strconv.Itoa(code)).Inc()
	}
	r.latency.Observe(d.Seconds())
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// durability exports the store's durability mode as an info metric.
func (m *metrics) durability(d Durability) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "countersign_store_durability_info",
		Help: "The store's backend and durability setting (SQLite synchronous, PostgreSQL synchronous_commit); always 1.",
	}, []string{"backend", "setting"})
	g.WithLabelValues(d.Backend, d.Setting).Set(1)
	m.reg.MustRegister(g)
}

// committerStats is the optional capability of a Committer that reports its
// batching (store.Committer does).
type committerStats interface {
	Stats() store.CommitterStats
}

// watchCommitter exports c's batch counters when it has them, so the mean
// group-commit batch (writes / batches) can be read off /metrics.
func (m *metrics) watchCommitter(c Committer) {
	if jc, ok := c.(*jobCommitter); ok {
		c = jc.inner
	}
	cs, ok := c.(committerStats)
	if !ok {
		return
	}
	m.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "countersign_commit_batches_total", Help: "Group-commit transactions (CommitSignatures calls).",
		}, func() float64 { return float64(cs.Stats().Batches) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "countersign_commit_writes_total", Help: "Signature writes committed through group commit (including failed ones).",
		}, func() float64 { st := cs.Stats(); return float64(st.Writes + st.Failed) }),
	)
}

// CommitMetrics are histograms of the group commit's transactions: how
// many signatures each held and how long it took (without the deferred
// fsync). Pass Observe as store.CommitterConfig.Observe and the value as
// Config.CommitMetrics, so /metrics shows what the commit linger
// (--commit-linger) and the load make of the batches.
type CommitMetrics struct {
	size, dur prometheus.Histogram
}

// NewCommitMetrics returns unregistered commit histograms.
func NewCommitMetrics() *CommitMetrics {
	return &CommitMetrics{
		size: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "countersign_commit_batch_size",
			Help:    "Signature writes per group-commit transaction.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 9), // 1 .. 256 (store.DefaultMaxBatch)
		}),
		dur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "countersign_commit_duration_seconds",
			Help:    "Time a group-commit transaction took in the store, without the deferred fsync.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}),
	}
}

// Observe records one committed batch; the committer's writer calls it.
func (c *CommitMetrics) Observe(b store.BatchStats) {
	c.size.Observe(float64(b.Size))
	c.dur.Observe(b.Duration.Seconds())
}
