package probe

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the probe's Prometheus series. One Metrics is shared by a
// Prober and its Detector.
type Metrics struct {
	results *prometheus.CounterVec   // pool, format, kind
	latency *prometheus.HistogramVec // pool, format
	alerts  *prometheus.CounterVec   // pool, classification
}

// NewMetrics registers the probe metrics with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "countersign", Subsystem: "probe", Name: "results_total",
			Help: "Synthetic probe and passive check results by pool, format and kind (ok, invalid, drift, unavailable, error).",
		}, []string{"pool", "format", "kind"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "countersign", Subsystem: "probe", Name: "sign_latency_seconds",
			Help:    "Latency of probe sign requests that got an answer.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2, 5},
		}, []string{"pool", "format"}),
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "countersign", Subsystem: "probe", Name: "alerts_total",
			Help: "Alerts raised by the detector by pool and classification.",
		}, []string{"pool", "classification"}),
	}
	for _, c := range []prometheus.Collector{m.results, m.latency, m.alerts} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("probe: metrics already registered: %w", err)
			}
			return nil, fmt.Errorf("probe: register metrics: %w", err)
		}
	}
	return m, nil
}

func (m *Metrics) observe(f Finding) {
	if m == nil {
		return
	}
	m.results.WithLabelValues(f.Pool, string(f.Format), string(f.Kind)).Inc()
	if f.Latency > 0 && f.Kind != KindUnavailable {
		m.latency.WithLabelValues(f.Pool, string(f.Format)).Observe(f.Latency.Seconds())
	}
}

func (m *Metrics) alert(a Alert) {
	if m == nil {
		return
	}
	m.alerts.WithLabelValues(a.Pool, string(a.Classification)).Inc()
}
