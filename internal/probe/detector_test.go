package probe

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestDetectorFailureRatioWindow(t *testing.T) {
	clock, got := newFakeClock(), newAlerts()
	d := NewDetector(DetectorConfig{Now: clock.Now, OnAlert: got.on, Window: 10, FailureRatio: 0.5})
	// One endpoint fails every other round: never 3 consecutive rounds,
	// but half the results fail.
	var firstFail time.Time
	for round := uint64(1); round <= 10; round++ {
		now := clock.Advance(DefaultInterval)
		k := KindOK
		if round%2 == 1 {
			k = KindUnavailable
			if firstFail.IsZero() {
				firstFail = now
			}
		}
		d.Observe(Finding{Time: now, Round: round, Pool: "stable", Endpoint: "http://a", Kind: k})
		if n := len(got.all()); (round < 10 && n != 0) || (round == 10 && n != 1) {
			t.Fatalf("round %d: %d alerts", round, n)
		}
	}
	a := got.all()[0]
	if a.Classification != Availability || !a.FirstBadAt.Equal(firstFail) || len(a.Findings) != 5 {
		t.Errorf("alert = %+v, want availability from %v with 5 failed findings", a, firstFail)
	}
}

func TestDetectorStreakIsPerEndpointAndRound(t *testing.T) {
	clock, got := newFakeClock(), newAlerts()
	d := NewDetector(DetectorConfig{Now: clock.Now, OnAlert: got.on})
	obs := func(round uint64, ep string, k Kind) {
		d.Observe(Finding{Time: clock.Now(), Round: round, Pool: "p", Endpoint: ep, Kind: k})
	}
	// Many failures in one round are one failing round.
	for range 5 {
		obs(1, "http://a", KindError)
	}
	// Two endpoints alternating never make a streak on either.
	obs(2, "http://b", KindUnavailable)
	obs(3, "http://a", KindUnavailable)
	obs(4, "http://b", KindUnavailable)
	for range 4 {
		obs(4, "http://a", KindOK)
	}
	if n := len(got.all()); n != 0 {
		t.Fatalf("%d alerts, want none", n)
	}
	obs(5, "http://b", KindUnavailable)
	obs(6, "http://b", KindUnavailable)
	if as := got.all(); len(as) != 1 || as[0].Findings[len(as[0].Findings)-1].Endpoint != "http://b" {
		t.Fatalf("alerts = %+v, want one for endpoint b", as)
	}
}

func TestDetectorPerformance(t *testing.T) {
	clock, got := newFakeClock(), newAlerts()
	d := NewDetector(DetectorConfig{Now: clock.Now, OnAlert: got.on, LatencyP99: 500 * time.Millisecond, LatencyWindow: 100, LatencyMinSamples: 20})
	obs := func(lat time.Duration) {
		d.Observe(Finding{Time: clock.Advance(DefaultInterval), Round: 1, Pool: "p", Endpoint: "http://a", Kind: KindOK, Latency: lat})
	}
	obs(2 * time.Second) // one slow answer before enough samples: nothing
	for range 98 {
		obs(10 * time.Millisecond)
	}
	if n := len(got.all()); n != 0 {
		t.Fatalf("%d alerts with 1 slow answer in 99, want none", n)
	}
	obs(900 * time.Millisecond) // 2 of 100 over the threshold: p99 is over
	as := got.all()
	if len(as) != 1 || as[0].Classification != Performance {
		t.Fatalf("alerts = %+v, want one performance alert", as)
	}
	if disabled := NewDetector(DetectorConfig{LatencyP99: -1, LatencyMinSamples: 1, OnAlert: got.on}); disabled != nil {
		disabled.Observe(Finding{Time: clock.Now(), Round: 1, Pool: "q", Endpoint: "http://a", Kind: KindOK, Latency: time.Hour})
		if n := len(got.all()); n != 1 {
			t.Errorf("disabled performance check alerted")
		}
	}
}

func TestDetectorPassiveFindingsOnlyJudgeCorruption(t *testing.T) {
	clock, got := newFakeClock(), newAlerts()
	d := NewDetector(DetectorConfig{Now: clock.Now, OnAlert: got.on})
	for range 50 {
		d.Observe(Finding{Time: clock.Advance(time.Millisecond), Pool: "canary", Kind: KindError, Detail: "jws cannot be verified without the document"})
	}
	if n := len(got.all()); n != 0 {
		t.Fatalf("%d alerts from passive errors, want none", n)
	}
	bad := Finding{Time: clock.Advance(time.Millisecond), Pool: "canary", Release: "v2", Kind: KindInvalid, SignatureID: "sig-9"}
	d.Observe(bad)
	as := got.all()
	if len(as) != 1 || as[0].Classification != Corruption || as[0].Release != "v2" || as[0].Findings[0].SignatureID != "sig-9" {
		t.Fatalf("alerts = %+v, want a corruption alert for sig-9", as)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewMetrics(reg); err == nil {
		t.Fatal("registering twice succeeded")
	}
	clock, got := newFakeClock(), newAlerts()
	d := NewDetector(DetectorConfig{Now: clock.Now, OnAlert: got.on, Metrics: m})
	d.Observe(Finding{Time: clock.Now(), Round: 1, Pool: "stable", Endpoint: "http://a", Format: "cms", Kind: KindOK, Latency: 20 * time.Millisecond})
	d.Observe(Finding{Time: clock.Now(), Round: 1, Pool: "stable", Endpoint: "http://a", Format: "raw", Kind: KindInvalid, Latency: 20 * time.Millisecond})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("pedantic gather: %v", err)
	}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"countersign_probe_results_total", map[string]string{"pool": "stable", "format": "cms", "kind": "ok"}, 1},
		{"countersign_probe_results_total", map[string]string{"pool": "stable", "format": "raw", "kind": "invalid"}, 1},
		{"countersign_probe_alerts_total", map[string]string{"pool": "stable", "classification": "corruption"}, 1},
		{"countersign_probe_sign_latency_seconds", map[string]string{"pool": "stable", "format": "cms"}, 1},
	} {
		if got := sample(mfs, tc.name, tc.labels); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
}

// sample returns a counter's value or a histogram's count.
func sample(mfs []*dto.MetricFamily, name string, labels map[string]string) float64 {
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue metrics
				}
			}
			if h := m.GetHistogram(); h != nil {
				return float64(h.GetSampleCount())
			}
			return m.GetCounter().GetValue()
		}
	}
	return -1
}
