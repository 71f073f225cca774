package gateway

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

var (
	descForwarded = prometheus.NewDesc("countersign_gateway_forwarded_total",
		"Requests forwarded to a pool.", []string{"pool"}, nil)
	descInFlight = prometheus.NewDesc("countersign_gateway_in_flight",
		"Requests forwarded to a pool and not yet answered.", []string{"pool"}, nil)
	descLastForward = prometheus.NewDesc("countersign_gateway_last_forwarded_timestamp_seconds",
		"Unix time of the last request forwarded to a pool.", []string{"pool"}, nil)
	descWeight = prometheus.NewDesc("countersign_gateway_pool_weight",
		"Configured weight of a pool, percent.", []string{"pool"}, nil)
	descEffWeight = prometheus.NewDesc("countersign_gateway_pool_effective_weight",
		"Share of traffic a pool gets given backend health, percent.", []string{"pool"}, nil)
	descBackendForwarded = prometheus.NewDesc("countersign_gateway_backend_forwarded_total",
		"Requests forwarded to a backend.", []string{"pool", "backend"}, nil)
	descBackendFailed = prometheus.NewDesc("countersign_gateway_backend_failed_total",
		"Requests forwarded to a backend that it did not answer (refused, dropped or reset before a response).", []string{"pool", "backend"}, nil)
	descBackendInFlight = prometheus.NewDesc("countersign_gateway_backend_in_flight",
		"Requests forwarded to a backend and not yet answered.", []string{"pool", "backend"}, nil)
	descBackendHealthy = prometheus.NewDesc("countersign_gateway_backend_healthy",
		"1 if the backend passes its readiness check.", []string{"pool", "backend"}, nil)
	descGated = prometheus.NewDesc("countersign_gateway_gated_total",
		"Requests refused by the maintenance gate.", nil, nil)
	descUnroutable = prometheus.NewDesc("countersign_gateway_unroutable_total",
		"Requests refused because no pool had a healthy backend.", nil, nil)
	descProxyErrs = prometheus.NewDesc("countersign_gateway_proxy_errors_total",
		"Forwarded requests that failed between gateway and backend.", nil, nil)
	descRetried = prometheus.NewDesc("countersign_gateway_retried_total",
		"Requests sent to a second backend after the first failed before answering.", nil, nil)
	descGate = prometheus.NewDesc("countersign_gateway_gate_on",
		"1 while the maintenance gate is on.", nil, nil)
)

// Describe implements prometheus.Collector.
func (g *Gateway) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descForwarded, descInFlight, descLastForward, descWeight, descEffWeight,
		descBackendForwarded, descBackendFailed, descBackendInFlight, descBackendHealthy, descGated, descUnroutable, descProxyErrs, descRetried, descGate} {
		ch <- d
	}
}

// Collect implements prometheus.Collector from a State snapshot, so series
// follow pool membership without stale labels.
func (g *Gateway) Collect(ch chan<- prometheus.Metric) {
	st := g.State()
	for _, p := range st.Pools {
		ch <- prometheus.MustNewConstMetric(descForwarded, prometheus.CounterValue, float64(p.Forwarded), p.Name)
		ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, float64(p.InFlight), p.Name)
		ch <- prometheus.MustNewConstMetric(descWeight, prometheus.GaugeValue, float64(p.Weight), p.Name)
		ch <- prometheus.MustNewConstMetric(descEffWeight, prometheus.GaugeValue, float64(p.EffectiveWeight), p.Name)
		if !p.LastForwardedAt.IsZero() {
			ch <- prometheus.MustNewConstMetric(descLastForward, prometheus.GaugeValue,
				float64(p.LastForwardedAt.UnixNano())/1e9, p.Name)
		}
		for _, b := range p.Backends {
			ch <- prometheus.MustNewConstMetric(descBackendForwarded, prometheus.CounterValue, float64(b.Forwarded), p.Name, b.URL)
			ch <- prometheus.MustNewConstMetric(descBackendFailed, prometheus.CounterValue, float64(b.Failed), p.Name, b.URL)
			ch <- prometheus.MustNewConstMetric(descBackendInFlight, prometheus.GaugeValue, float64(b.InFlight), p.Name, b.URL)
			ch <- prometheus.MustNewConstMetric(descBackendHealthy, prometheus.GaugeValue, boolFloat(b.Healthy), p.Name, b.URL)
		}
	}
	ch <- prometheus.MustNewConstMetric(descGated, prometheus.CounterValue, float64(st.Gated))
	ch <- prometheus.MustNewConstMetric(descUnroutable, prometheus.CounterValue, float64(st.Unroutable))
	ch <- prometheus.MustNewConstMetric(descProxyErrs, prometheus.CounterValue, float64(st.ProxyErrs))
	ch <- prometheus.MustNewConstMetric(descRetried, prometheus.CounterValue, float64(st.Retried))
	ch <- prometheus.MustNewConstMetric(descGate, prometheus.GaugeValue, boolFloat(st.Gate.On))
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// metricsHandler serves this gateway's metrics from a private registry.
func (g *Gateway) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(g)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
