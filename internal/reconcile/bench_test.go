package reconcile_test

import (
	"context"
	"crypto/ecdsa"
	"flag"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/keys"
	"github.com/countersign/countersign/internal/reconcile"
	"github.com/countersign/countersign/internal/reconcile/reconciletest"
)

var benchSigs = flag.Int("window-sigs", 20_000, "signatures in the window of BenchmarkWindowVerify and BenchmarkVerifyWindowStore")

// rawVerify verifies sigs with ecdsa.VerifyASN1 on GOMAXPROCS goroutines:
// the raw parallel verify limit for exactly this work, measured next to
// the window verification so both see the same machine load.
func rawVerify(b *testing.B, pub *ecdsa.PublicKey, sigs [][2][]byte) {
	var next atomic.Int64
	var bad atomic.Bool
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < len(sigs); i = int(next.Add(1)) - 1 {
				if !ecdsa.VerifyASN1(pub, sigs[i][0], sigs[i][1]) {
					bad.Store(true)
				}
			}
		}()
	}
	wg.Wait()
	if bad.Load() {
		b.Fatal("raw verify failed")
	}
}

// pair measures window verification against raw verification of the same
// signatures, in wall-clock time (what the target is about) and in this
// process's CPU time (user + system), which other processes' load on the
// shared machine does not inflate.
type pair struct {
	window, raw       time.Duration
	windowCPU, rawCPU time.Duration
}

// run measures one raw pass and one window pass (window), alternating
// which goes first so drifting load does not favour either.
func (p *pair) run(b *testing.B, i int, pub *ecdsa.PublicKey, raw [][2][]byte, window func()) {
	rawPass := func() {
		c0, t0 := cpuTime(b), time.Now()
		rawVerify(b, pub, raw)
		p.raw += time.Since(t0)
		p.rawCPU += cpuTime(b) - c0
	}
	if i%2 == 1 {
		rawPass()
	}
	c0, t0 := cpuTime(b), time.Now()
	window()
	p.window += time.Since(t0)
	p.windowCPU += cpuTime(b) - c0
	if i%2 == 0 {
		rawPass()
	}
}

func (p *pair) report(b *testing.B, sigs int) {
	n := float64(sigs * b.N)
	b.ReportMetric(n/p.window.Seconds(), "sigs/s")
	b.ReportMetric(n/p.raw.Seconds(), "raw_verify/s")
	b.ReportMetric(p.raw.Seconds()/p.window.Seconds(), "ratio_to_raw")
	b.ReportMetric(p.rawCPU.Seconds()/p.windowCPU.Seconds(), "cpu_ratio")
}

// cpuTime is the CPU time this process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkWindowVerify classifies a window of valid ECDSA P-256 raw
// signatures and reports its rate against raw parallel ecdsa.VerifyASN1
// of the same signatures in the same iteration (ratio_to_raw; the issue's
// target is >= 0.8), plus MeasureVerifyLimit's figure for reference.
func BenchmarkWindowVerify(b *testing.B) {
	w := reconciletest.Seed(b, reconciletest.Counts{})
	sigs := w.Raw(b, *benchSigs)
	pub := benchKey(b, w)
	raw := make([][2][]byte, len(sigs))
	for i, s := range sigs {
		raw[i] = [2][]byte{s.DocumentDigest, s.Signature}
	}
	limit, err := reconcile.MeasureVerifyLimit(time.Second)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ResetTimer()
	var m pair
	for i := 0; b.Loop(); i++ {
		m.run(b, i, pub, raw, func() {
			vs, err := reconcile.VerifySignatures(ctx, w.Inst.Store, sigs, reconcile.VerifyConfig{})
			if err != nil {
				b.Fatal(err)
			}
			if r := reconcile.Summarize(vs); r.Counts[reconcile.ClassValid] != len(sigs) {
				b.Fatalf("valid = %d of %d", r.Counts[reconcile.ClassValid], len(sigs))
			}
		})
	}
	m.report(b, len(sigs))
	b.ReportMetric(limit.AllCores, "limit_verify/s")
}

// BenchmarkVerifyWindowStore is window verification end to end, as step 10
// of the playbook runs it: n valid raw ECDSA P-256 signatures committed to
// SQLite after a checkpoint, then VerifyWindow selects them from the store
// (by release and by audit index) and classifies them. ratio_to_raw
// compares its rate with raw parallel ecdsa.VerifyASN1 of the same
// signatures in the same iteration; select_s is how long selecting alone
// (WindowSignatures) takes, measured once before the loop.
func BenchmarkVerifyWindowStore(b *testing.B) {
	ctx := context.Background()
	w := reconciletest.Seed(b, reconciletest.Counts{})
	before, err := w.Inst.Store.AuditSize(ctx)
	if err != nil {
		b.Fatal(err)
	}
	sigs := w.CommitRaw(b, *benchSigs)
	pub := benchKey(b, w)
	raw := make([][2][]byte, len(sigs))
	for i, s := range sigs {
		raw[i] = [2][]byte{s.DocumentDigest, s.Signature}
	}
	start := time.Now()
	sel, err := reconcile.WindowSignatures(ctx, w.Inst.Store, w.Window, before)
	if err != nil || len(sel) != len(sigs) {
		b.Fatalf("WindowSignatures: %d of %d, %v", len(sel), len(sigs), err)
	}
	selectTime := time.Since(start)
	sel = nil
	b.ResetTimer()
	var m pair
	for i := 0; b.Loop(); i++ {
		m.run(b, i, pub, raw, func() {
			r, err := reconcile.VerifyWindow(ctx, w.Inst.Store, w.Window, before, reconcile.VerifyConfig{})
			if err != nil {
				b.Fatal(err)
			}
			if r.Total != len(sigs) || r.Counts[reconcile.ClassValid] != len(sigs) {
				b.Fatalf("total %d, valid %d, want %d", r.Total, r.Counts[reconcile.ClassValid], len(sigs))
			}
		})
	}
	m.report(b, len(sigs))
	b.ReportMetric(selectTime.Seconds(), "select_s")
}

// benchKey is the public key of the seed's tenant "p256" key.
func benchKey(b *testing.B, w *reconciletest.World) *ecdsa.PublicKey {
	b.Helper()
	kvs, err := w.Inst.Store.KeyVersions(context.Background(), reconciletest.Tenant, "p256")
	if err != nil {
		b.Fatal(err)
	}
	pub, _, err := keys.VerifyMaterial(kvs[0])
	if err != nil {
		b.Fatal(err)
	}
	return pub.(*ecdsa.PublicKey)
}
