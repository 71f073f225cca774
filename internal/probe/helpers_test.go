package probe

import (
	"encoding/base64"

	"github.com/countersign/countersign/client"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// fakeClock is the injected clock: tests move it, nothing sleeps.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

// alerts collects alerts.
type alerts struct {
	mu sync.Mutex
	as []Alert
	ch chan Alert
}

func newAlerts() *alerts { return &alerts{ch: make(chan Alert, 64)} }

func (a *alerts) on(al Alert) {
	a.mu.Lock()
	a.as = append(a.as, al)
	a.mu.Unlock()
	a.ch <- al
}

func (a *alerts) all() []Alert {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]Alert(nil), a.as...)
}

// rig is a prober + detector over fake nodes with an injected clock.
type rig struct {
	clock    *fakeClock
	prober   *Prober
	detector *Detector
	alerts   *alerts
}

func testPolicy() *Policy {
	return &Policy{Keys: []KeyPolicy{{Key: "probe", Algorithm: "ecdsa-p256", Digest: "sha256", MinVersion: 1, MaxVersion: 1}}}
}

func newRig(t *testing.T, targets Targets, mut func(*Config, *DetectorConfig)) *rig {
	t.Helper()
	r := &rig{clock: newFakeClock(), alerts: newAlerts()}
	dc := DetectorConfig{Now: r.clock.Now, OnAlert: r.alerts.on}
	cfg := Config{
		Targets: targets, Policy: testPolicy(), Trust: newTestKeys(t).trust(t), Token: "probe-token",
		Timeout: 2 * time.Second, KeyCheckEvery: -1, Now: r.clock.Now,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if mut != nil {
		mut(&cfg, &dc)
	}
	r.detector = NewDetector(dc)
	cfg.Sink = r.detector.Observe
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.prober = p
	return r
}

// round advances the clock by one interval and runs a round.
func (r *rig) round(t *testing.T) []Finding {
	t.Helper()
	r.clock.Advance(DefaultInterval)
	return r.prober.Round(t.Context())
}

func kinds(fs []Finding) map[Kind]int {
	m := map[Kind]int{}
	for _, f := range fs {
		m[f.Kind]++
	}
	return m
}

func encodeB64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func newTrustedClient(t *testing.T, url string) *client.Client {
	t.Helper()
	c, err := client.New(url, "probe-token", client.WithRetry(client.RetryPolicy{MaxAttempts: 1}))
	if err != nil {
		t.Fatal(err)
	}
	return c
}
