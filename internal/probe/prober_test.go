package probe

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/api"
)

func TestProbeClassifiesAnswers(t *testing.T) {
	n := newFakeNode(t, "v1")
	tests := []struct {
		mode   mode
		want   Kind
		detail string // substring of every finding's detail
	}{
		{modeOK, KindOK, ""},
		{modeCorrupt, KindInvalid, ""},
		{modeOtherKey, KindInvalid, ""},
		{modeWrongDigest, KindDrift, ""},
		{modeStampAlg, KindDrift, "algorithm"},
		{modeVersion2, KindDrift, "key_version 2 outside policy range"},
		{modeVersion3, KindDrift, "version 3 is not pinned"},
		{modeBodyRelease, KindDrift, "release"},
		{mode503, KindUnavailable, "503"},
		{mode400, KindError, "400"},
		{modeGarbage, KindError, ""},
		{modeHang, KindUnavailable, "timeout"},
	}
	for _, tc := range tests {
		t.Run(string(tc.mode), func(t *testing.T) {
			r := newRig(t, StaticTargets(map[string]Target{"stable": {Release: "v1", Endpoints: []string{n.URL()}}}),
				func(c *Config, _ *DetectorConfig) { c.Timeout = 150 * time.Millisecond })
			n.set(tc.mode)
			t.Cleanup(func() { n.set(modeOK) })
			fs := r.round(t)
			if len(fs) != 3 {
				t.Fatalf("got %d findings, want 3 (one per format): %+v", len(fs), fs)
			}
			for _, f := range fs {
				if f.Kind != tc.want || !strings.Contains(f.Detail, tc.detail) {
					t.Errorf("%s: got %s %q, want %s containing %q", f.Format, f.Kind, f.Detail, tc.want, tc.detail)
				}
				if f.Pool != "stable" || f.Endpoint != n.URL() || f.Round != 1 || !f.Time.Equal(r.clock.Now()) {
					t.Errorf("%s: finding not stamped: %+v", f.Format, f)
				}
				if tc.want != KindUnavailable && f.Release == "" {
					t.Errorf("%s: no release on %+v", f.Format, f)
				}
			}
		})
	}
}

func TestReleaseMustMatchFleet(t *testing.T) {
	n := newFakeNode(t, "v2") // the fleet believes v1 runs there
	r := newRig(t, StaticTargets(map[string]Target{"stable": {Release: "v1", Endpoints: []string{n.URL()}}}), nil)
	fs := r.round(t)
	if got := kinds(fs); got[KindDrift] != 3 {
		t.Fatalf("got %v, want 3 drift findings", got)
	}
	if !strings.Contains(fs[0].Detail, `fleet says "v1"`) || fs[0].Release != "v2" {
		t.Errorf("finding = %+v, want the answered release v2 and the fleet's v1 in the detail", fs[0])
	}
}

// TestDetectionWithinOneInterval: the first bad signature is alerted on in
// the first round after the fault, i.e. within one interval of the clock.
func TestDetectionWithinOneInterval(t *testing.T) {
	for _, m := range []mode{modeCorrupt, modeOtherKey, modeWrongDigest, modeVersion3} {
		t.Run(string(m), func(t *testing.T) {
			stable, canary := newFakeNode(t, "v1"), newFakeNode(t, "v2")
			r := newRig(t, StaticTargets(map[string]Target{
				"stable": {Release: "v1", Endpoints: []string{stable.URL()}},
				"canary": {Release: "v2", Endpoints: []string{canary.URL()}},
			}), nil)
			for range 3 {
				if fs := r.round(t); kinds(fs)[KindOK] != 6 {
					t.Fatalf("healthy round: %v", kinds(fs))
				}
			}
			faultAt := r.clock.Advance(DefaultInterval / 3) // the canary turns bad between two rounds
			canary.set(m)
			r.round(t)
			as := r.alerts.all()
			if len(as) != 1 {
				t.Fatalf("got %d alerts after the first bad round, want 1: %+v", len(as), as)
			}
			a := as[0]
			if a.Pool != "canary" || a.Release != "v2" || a.Classification != Corruption {
				t.Errorf("alert = %s/%s/%s, want canary/v2/corruption", a.Pool, a.Release, a.Classification)
			}
			if lat := a.RaisedAt.Sub(faultAt); lat <= 0 || lat > DefaultInterval {
				t.Errorf("detection latency %v, want within one interval (%v)", lat, DefaultInterval)
			}
			if !a.FirstBadAt.Equal(a.RaisedAt) || len(a.Findings) != 1 || !a.Findings[0].Kind.bad() {
				t.Errorf("alert evidence = first %v raised %v findings %+v", a.FirstBadAt, a.RaisedAt, a.Findings)
			}
		})
	}
}

func TestNoAlertOnSingleTransient503(t *testing.T) {
	n := newFakeNode(t, "v1")
	r := newRig(t, StaticTargets(map[string]Target{"stable": {Release: "v1", Endpoints: []string{n.URL()}}}), nil)
	r.round(t)
	n.mu.Lock()
	n.fail503 = 1
	n.mu.Unlock()
	var unavailable int
	for range 30 {
		unavailable += kinds(r.round(t))[KindUnavailable]
	}
	if unavailable != 1 {
		t.Fatalf("saw %d unavailable findings, want exactly the one transient 503", unavailable)
	}
	if as := r.alerts.all(); len(as) != 0 {
		t.Fatalf("got alerts %+v on one transient 503", as)
	}
	// A whole lost round (every format fails at once) is still transient.
	n.mu.Lock()
	n.fail503 = 3
	n.mu.Unlock()
	for range 10 {
		r.round(t)
	}
	if as := r.alerts.all(); len(as) != 0 {
		t.Fatalf("got alerts %+v on one lost round", as)
	}
}

func TestAvailabilityAlertAfterThreshold(t *testing.T) {
	n := newFakeNode(t, "v1")
	r := newRig(t, StaticTargets(map[string]Target{"stable": {Release: "v1", Endpoints: []string{n.URL()}}}), nil)
	r.round(t)
	n.set(mode503)
	first := r.clock.Now().Add(DefaultInterval)
	for i := 1; i <= DefaultConsecutiveRounds; i++ {
		r.round(t)
		got := len(r.alerts.all())
		if want := map[bool]int{true: 1, false: 0}[i == DefaultConsecutiveRounds]; got != want {
			t.Fatalf("after %d failing rounds: %d alerts, want %d", i, got, want)
		}
	}
	a := r.alerts.all()[0]
	if a.Classification != Availability || a.Pool != "stable" || a.Release != "v1" || !a.FirstBadAt.Equal(first) {
		t.Errorf("alert = %+v, want availability of stable v1 first bad at %v", a, first)
	}
	// Raised at the first failure of the third round.
	if want := 3*(DefaultConsecutiveRounds-1) + 1; len(a.Findings) != want {
		t.Errorf("alert carries %d findings, want %d", len(a.Findings), want)
	}
}

func TestHysteresisAndReset(t *testing.T) {
	n := newFakeNode(t, "v1")
	r := newRig(t, StaticTargets(map[string]Target{"stable": {Release: "v1", Endpoints: []string{n.URL()}}}), nil)
	n.set(mode503)
	for range 5 {
		r.round(t)
	}
	n.set(modeCorrupt) // escalation: availability incident turns out to be corruption
	for range 5 {
		r.round(t)
	}
	as := r.alerts.all()
	if len(as) != 2 || as[0].Classification != Availability || as[1].Classification != Corruption {
		t.Fatalf("alerts = %+v, want one availability then one corruption", as)
	}
	n.set(mode503) // de-escalation raises nothing
	for range 5 {
		r.round(t)
	}
	if got := len(r.alerts.all()); got != 2 {
		t.Fatalf("got %d alerts, want still 2", got)
	}
	r.detector.Reset("stable")
	if c := r.detector.Alerted("stable"); c != "" {
		t.Fatalf("Alerted after Reset = %q", c)
	}
	n.set(modeCorrupt)
	r.round(t)
	if as := r.alerts.all(); len(as) != 3 || as[2].Classification != Corruption {
		t.Fatalf("after Reset: alerts %+v, want a new corruption alert", as)
	}
}

func TestTargetsFollowDeploys(t *testing.T) {
	a, b := newFakeNode(t, "v1"), newFakeNode(t, "v2")
	var current atomic.Value
	current.Store(map[string]Target{"stable": {Release: "v1", Endpoints: []string{a.URL()}}})
	targets := func(context.Context) (map[string]Target, error) { return current.Load().(map[string]Target), nil }
	r := newRig(t, targets, nil)
	endpoints := func(fs []Finding) map[string]string {
		m := map[string]string{}
		for _, f := range fs {
			if f.Kind != KindOK {
				t.Errorf("unexpected finding %+v", f)
			}
			m[f.Endpoint] = f.Release
		}
		return m
	}
	if got := endpoints(r.round(t)); len(got) != 1 || got[a.URL()] != "v1" {
		t.Fatalf("before deploy probed %v", got)
	}
	current.Store(map[string]Target{"stable": {Release: "v2", Endpoints: []string{b.URL()}}})
	aBefore := a.count()
	if got := endpoints(r.round(t)); len(got) != 1 || got[b.URL()] != "v2" {
		t.Fatalf("after deploy probed %v", got)
	}
	if a.count() != aBefore {
		t.Errorf("the replaced endpoint was still probed")
	}
	// When the fleet cannot answer, the last known targets are probed.
	r.prober.cfg.Targets = func(context.Context) (map[string]Target, error) { return nil, context.DeadlineExceeded }
	if got := endpoints(r.round(t)); got[b.URL()] != "v2" {
		t.Fatalf("with the fleet down probed %v, want the last known targets", got)
	}
}

func TestServedKeyMustMatchPinnedKey(t *testing.T) {
	n := newFakeNode(t, "v1")
	r := newRig(t, StaticTargets(map[string]Target{"stable": {Release: "v1", Endpoints: []string{n.URL()}}}),
		func(c *Config, _ *DetectorConfig) { c.KeyCheckEvery = 2 })
	if fs := r.round(t); len(fs) != 3 || kinds(fs)[KindOK] != 3 {
		t.Fatalf("healthy round with key check: %+v", fs) // matching key: no key finding
	}
	n.set(modeServeOther) // the node now serves an impostor for version 2; it still signs with v1
	if fs := r.round(t); kinds(fs)[KindOK] != 3 || len(fs) != 3 {
		t.Fatalf("round without key check: %+v", fs)
	}
	fs := r.round(t)
	var drift []Finding
	for _, f := range fs {
		if f.Format == "" {
			drift = append(drift, f)
		}
	}
	if len(drift) != 1 || drift[0].Kind != KindDrift || drift[0].KeyVersion != 2 || !strings.Contains(drift[0].Detail, "public key") {
		t.Fatalf("key check findings = %+v, want one drift of version 2's public key", drift)
	}
	if as := r.alerts.all(); len(as) != 1 || as[0].Classification != Corruption {
		t.Fatalf("alerts = %+v, want one corruption alert", as)
	}
}

func TestSlowPoolDoesNotDelayOthers(t *testing.T) {
	slow, canary := newFakeNode(t, "v1"), newFakeNode(t, "v2")
	slow.set(modeHang)
	canary.set(modeCorrupt)
	for _, n := range []*fakeNode{slow, canary} {
		n.mu.Lock()
		n.arrived = make(chan struct{}, 1024)
		n.mu.Unlock()
	}
	r := newRig(t, StaticTargets(map[string]Target{
		"stable": {Release: "v1", Endpoints: []string{slow.URL()}},
		"canary": {Release: "v2", Endpoints: []string{canary.URL()}},
	}), func(c *Config, _ *DetectorConfig) { c.Timeout = time.Minute; c.Interval = 10 * time.Millisecond })
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.prober.Run(ctx) }()
	select {
	case a := <-r.alerts.ch:
		if a.Pool != "canary" || a.Classification != Corruption {
			t.Errorf("first alert = %+v, want canary corruption", a)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no alert while the stable pool hangs")
	}
	waitN := func(n *fakeNode, k int) {
		for range k {
			select {
			case <-n.arrived:
			case <-time.After(30 * time.Second):
				t.Fatalf("%s: fewer than %d sign requests arrived", n.URL(), k)
			}
		}
	}
	waitN(slow, 3)    // the three hung slots
	waitN(canary, 30) // ten more rounds went by
	if hung := slow.count(); hung != 3 {
		t.Errorf("hanging endpoint got %d requests, want 3 (one per slot, no pile-up)", hung)
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
}

func TestPerformanceAlertFromSlowNode(t *testing.T) {
	n := newFakeNode(t, "v1")
	n.mu.Lock()
	n.mode, n.delay = modeSlow, 60*time.Millisecond
	n.mu.Unlock()
	r := newRig(t, StaticTargets(map[string]Target{"stable": {Release: "v1", Endpoints: []string{n.URL()}}}),
		func(_ *Config, d *DetectorConfig) { d.LatencyP99, d.LatencyMinSamples = 30*time.Millisecond, 3 })
	fs := r.round(t)
	if kinds(fs)[KindOK] != 3 {
		t.Fatalf("slow round: %+v", fs)
	}
	as := r.alerts.all()
	if len(as) != 1 || as[0].Classification != Performance || len(as[0].Findings) != 3 {
		t.Fatalf("alerts = %+v, want one performance alert with the 3 slow findings", as)
	}
}

func TestNewRejectsUnpinnedPolicyKey(t *testing.T) {
	p := &Policy{Keys: []KeyPolicy{{Key: "invoices", Algorithm: "ecdsa-p256", Formats: []api.Format{api.FormatRaw}}}}
	_, err := New(Config{Targets: StaticTargets(nil), Policy: p, Trust: newTestKeys(t).trust(t)})
	if err == nil || !strings.Contains(err.Error(), "no pinned version") {
		t.Fatalf("New = %v, want a policy error for an unpinned key", err)
	}
}
