package probe

import (
	"slices"
	"sync"
	"time"
)

// Classification is the incident class an alert proposes (playbook step 1).
type Classification string

const (
	Corruption   Classification = "corruption"
	Availability Classification = "availability"
	Performance  Classification = "performance"
)

// severity orders classifications: an open incident is re-raised only for
// a more severe class.
func (c Classification) severity() int {
	switch c {
	case Corruption:
		return 3
	case Availability:
		return 2
	case Performance:
		return 1
	}
	return 0
}

// Alert is raised once per pool per incident (see Detector).
type Alert struct {
	Pool           string         `json:"pool"`
	Release        string         `json:"release"`
	Classification Classification `json:"classification"`
	// FirstBadAt is when the first finding of this incident was observed:
	// the bad signature, the first failure of the failing streak or
	// window, or the oldest slow sample.
	FirstBadAt time.Time `json:"first_bad_at"`
	// RaisedAt is the detector's clock when the alert was raised.
	RaisedAt time.Time `json:"raised_at"`
	Reason   string    `json:"reason"`
	// Findings are the evidence, oldest first (at most
	// DetectorConfig.MaxAlertFindings).
	Findings []Finding `json:"findings"`
}

// DetectorConfig tunes the detector. Zero fields take the defaults below.
type DetectorConfig struct {
	// ConsecutiveRounds: an endpoint failing (unavailable/error) in this
	// many consecutive probe rounds raises an availability alert.
	// Default 3.
	ConsecutiveRounds int
	// Window and FailureRatio: when the pool's last Window probe results
	// are all in and at least FailureRatio of them failed, raise an
	// availability alert. Defaults 20 and 0.5.
	Window       int
	FailureRatio float64
	// LatencyP99 is the performance threshold on the p99 of the last
	// LatencyWindow answered probes, judged once LatencyMinSamples are in.
	// Defaults 1 s, 100, 20. A negative LatencyP99 disables the check.
	LatencyP99        time.Duration
	LatencyWindow     int
	LatencyMinSamples int
	// MaxAlertFindings caps Alert.Findings. Default 16.
	MaxAlertFindings int
	// OnAlert receives alerts. It is called synchronously, outside the
	// detector's lock, from the goroutine that observed the finding; it
	// should hand off quickly (containment has a 2 s budget).
	OnAlert func(Alert)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Metrics, if set, counts results, latencies and alerts.
	Metrics *Metrics
}

// Detector defaults.
const (
	DefaultConsecutiveRounds = 3
	DefaultWindow            = 20
	DefaultFailureRatio      = 0.5
	DefaultLatencyP99        = time.Second
	DefaultLatencyWindow     = 100
	DefaultLatencyMinSamples = 20
	DefaultMaxAlertFindings  = 16
)

func (c DetectorConfig) withDefaults() DetectorConfig {
	if c.ConsecutiveRounds <= 0 {
		c.ConsecutiveRounds = DefaultConsecutiveRounds
	}
	if c.Window <= 0 {
		c.Window = DefaultWindow
	}
	if c.FailureRatio <= 0 || c.FailureRatio > 1 {
		c.FailureRatio = DefaultFailureRatio
	}
	if c.LatencyP99 == 0 {
		c.LatencyP99 = DefaultLatencyP99
	}
	if c.LatencyWindow <= 0 {
		c.LatencyWindow = DefaultLatencyWindow
	}
	if c.LatencyMinSamples <= 0 {
		c.LatencyMinSamples = DefaultLatencyMinSamples
	}
	c.LatencyMinSamples = max(2, min(c.LatencyMinSamples, c.LatencyWindow))
	if c.MaxAlertFindings <= 0 {
		c.MaxAlertFindings = DefaultMaxAlertFindings
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Detector turns findings into alerts. Rules (doc.go explains why):
//   - one invalid or drift finding raises a corruption alert at once;
//   - an endpoint failing in ConsecutiveRounds consecutive rounds, or
//     FailureRatio of a full Window of pool results failing, raises an
//     availability alert;
//   - p99 latency over LatencyP99 raises a performance alert.
//
// Hysteresis: after an alert a pool raises nothing more until Reset, except
// one escalation to a more severe classification (a performance or
// availability incident that turns out to be corruption).
//
// It is safe for concurrent use.
type Detector struct {
	cfg DetectorConfig

	mu    sync.Mutex
	pools map[string]*poolState
}

type poolState struct {
	alerted   Classification // "" when no open incident
	window    []Finding      // last cfg.Window probe results (ring, oldest first)
	latencies []time.Duration
	latFirst  []time.Time // observation time of each latency sample
	endpoints map[string]*streak
}

type streak struct {
	lastFailRound uint64
	rounds        int
	first         time.Time // first failure of the streak
	evidence      []Finding
}

// NewDetector returns a detector with cfg (defaults applied).
func NewDetector(cfg DetectorConfig) *Detector {
	return &Detector{cfg: cfg.withDefaults(), pools: map[string]*poolState{}}
}

// Observe feeds one finding. It has the signature a Prober's Sink wants.
func (d *Detector) Observe(f Finding) {
	d.cfg.Metrics.observe(f)
	d.mu.Lock()
	a, ok := d.observeLocked(f)
	d.mu.Unlock()
	if ok {
		d.cfg.Metrics.alert(a)
		if d.cfg.OnAlert != nil {
			d.cfg.OnAlert(a)
		}
	}
}

// Reset closes the pool's incident: state is cleared and the pool may alert
// again.
func (d *Detector) Reset(pool string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.pools, pool)
}

// Alerted reports the classification of the pool's open incident, "" if none.
func (d *Detector) Alerted(pool string) Classification {
	d.mu.Lock()
	defer d.mu.Unlock()
	if p := d.pools[pool]; p != nil {
		return p.alerted
	}
	return ""
}

// observeLocked updates state and decides. d.mu must be held.
func (d *Detector) observeLocked(f Finding) (Alert, bool) {
	p := d.pools[f.Pool]
	if p == nil {
		p = &poolState{endpoints: map[string]*streak{}}
		d.pools[f.Pool] = p
	}
	if f.Kind.bad() {
		return d.raiseLocked(p, f, Corruption, f.Time, "invalid or drifted signature: "+f.Detail, []Finding{f})
	}
	if f.Round == 0 && f.Endpoint == "" {
		return Alert{}, false // a passive check: only corruption is judged from real traffic
	}
	p.window = appendRing(p.window, f, d.cfg.Window)
	if !f.Kind.failed() && f.Latency > 0 {
		p.latencies = appendRing(p.latencies, f.Latency, d.cfg.LatencyWindow)
		p.latFirst = appendRing(p.latFirst, f.Time, d.cfg.LatencyWindow)
	}
	if a, ok := d.availabilityLocked(p, f); ok {
		return a, true
	}
	return d.performanceLocked(p, f)
}

func (d *Detector) availabilityLocked(p *poolState, f Finding) (Alert, bool) {
	if f.Kind.failed() {
		s := p.endpoints[f.Endpoint]
		if s == nil {
			s = &streak{}
			p.endpoints[f.Endpoint] = s
		}
		switch {
		case s.rounds > 0 && f.Round == s.lastFailRound:
			// another failure in a round already counted
		case s.rounds > 0 && f.Round == s.lastFailRound+1:
			s.rounds++
		default:
			s.rounds, s.first, s.evidence = 1, f.Time, nil
		}
		s.lastFailRound = f.Round
		s.evidence = appendRing(s.evidence, f, d.cfg.MaxAlertFindings)
		if s.rounds >= d.cfg.ConsecutiveRounds {
			return d.raiseLocked(p, f, Availability, s.first,
				"endpoint "+f.Endpoint+" failed in consecutive probe rounds: "+f.Detail, s.evidence)
		}
	}
	if len(p.window) < d.cfg.Window {
		return Alert{}, false
	}
	var failed []Finding
	for _, w := range p.window {
		if w.Kind.failed() {
			failed = append(failed, w)
		}
	}
	if float64(len(failed)) >= d.cfg.FailureRatio*float64(len(p.window)) && len(failed) > 0 {
		return d.raiseLocked(p, f, Availability, failed[0].Time,
			"too many failed probes in the window: "+f.Detail, failed)
	}
	return Alert{}, false
}

func (d *Detector) performanceLocked(p *poolState, f Finding) (Alert, bool) {
	if d.cfg.LatencyP99 < 0 || len(p.latencies) < d.cfg.LatencyMinSamples {
		return Alert{}, false
	}
	p99 := percentile(p.latencies, 0.99)
	if p99 <= d.cfg.LatencyP99 {
		return Alert{}, false
	}
	var slow []Finding
	for _, w := range p.window {
		if w.Latency > d.cfg.LatencyP99 {
			slow = append(slow, w)
		}
	}
	first := p.latFirst[0]
	for i, l := range p.latencies {
		if l > d.cfg.LatencyP99 {
			first = p.latFirst[i]
			break
		}
	}
	return d.raiseLocked(p, f, Performance, first, "probe latency p99 "+p99.String()+" over "+d.cfg.LatencyP99.String(), slow)
}

// raiseLocked applies hysteresis. d.mu must be held.
func (d *Detector) raiseLocked(p *poolState, f Finding, c Classification, first time.Time, reason string, evidence []Finding) (Alert, bool) {
	if p.alerted != "" && c.severity() <= p.alerted.severity() {
		return Alert{}, false
	}
	p.alerted = c
	if n := len(evidence); n > d.cfg.MaxAlertFindings {
		evidence = evidence[n-d.cfg.MaxAlertFindings:]
	}
	return Alert{
		Pool: f.Pool, Release: f.Release, Classification: c, FirstBadAt: first,
		RaisedAt: d.cfg.Now(), Reason: reason, Findings: slices.Clone(evidence),
	}, true
}

func appendRing[T any](s []T, v T, n int) []T {
	s = append(s, v)
	if len(s) > n {
		s = slices.Delete(s, 0, len(s)-n)
	}
	return s
}

// percentile is the q-quantile of ds that never lets a single sample decide:
// the largest max(1, ⌊(1-q)·n⌋) samples are set aside (with 100 samples,
// p99 is the second largest). It needs at least 2 samples.
func percentile(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	drop := max(1, int((1-q)*float64(len(s))))
	return s[max(0, len(s)-1-drop)]
}
