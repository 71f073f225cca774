package auditlog

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/store"
	"github.com/countersign/countersign/internal/store/sqlite"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if bigDir != "" {
		os.RemoveAll(bigDir)
	}
	os.Exit(code)
}

// BenchmarkAppendIntegrate measures sustained append + integrate of audit
// events on SQLite, in batches of 1,000 events. mode=inline integrates
// (and signs a checkpoint) after every 4 batches in the appending
// goroutine; mode=run integrates concurrently in Integrator.Run, as a node
// does, and the clock stops when the last event is in a signed checkpoint.
func BenchmarkAppendIntegrate(b *testing.B) {
	for _, sync := range []string{store.SyncFull, store.SyncNormal} {
		for _, mode := range []string{"inline", "run"} {
			b.Run("sync="+sync+"/mode="+mode, func(b *testing.B) { benchAppendIntegrate(b, sync, mode == "run") })
		}
	}
}

func benchAppendIntegrate(b *testing.B, sync string, concurrent bool) {
	ctx := context.Background()
	dir := b.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "bench.db"), store.Options{Migrate: true, Synchronous: sync})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	s, _ := testKey(b)
	in, err := NewIntegrator(st, Config{Signer: s, HistoryPath: filepath.Join(dir, HistoryFile), Interval: 50 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	const batch = 1000
	evs := make([]store.AuditEvent, batch)
	for i := range evs {
		evs[i] = testEvent(b, i)
	}
	runCtx, stop := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	b.ResetTimer()
	if concurrent {
		go func() { runErr <- in.Run(runCtx) }()
	}
	n := 0
	for n < b.N {
		k := min(batch, b.N-n)
		if _, err := st.AppendEvents(ctx, evs[:k]); err != nil {
			b.Fatal(err)
		}
		n += k
		if !concurrent && (n%(4*batch) == 0 || n == b.N) {
			if _, err := in.IntegrateOnce(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	if concurrent {
		for {
			cp, err := st.LatestCheckpoint(ctx)
			if err == nil && cp.Size == int64(b.N) {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	b.StopTimer()
	stop()
	if concurrent {
		if err := <-runErr; !errors.Is(err, context.Canceled) {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

const bigSize = 1_000_000

var (
	bigOnce sync.Once
	bigDir  string // temporary, removed by TestMain
	bigPath string // where the big log is
	bigSt   *sqlite.Store
	bigKey  string
	bigErr  error
)

// benchDirEnv names a directory where bigLog keeps the 1,000,000-entry
// log between runs (building it takes about a minute). Unset, the log is
// built in a temporary directory and removed when the run ends.
const benchDirEnv = "AUDITLOG_BENCH_DIR"

// bigLog builds a 1,000,000-entry log once per benchmark run, or reuses
// the complete one kept in $AUDITLOG_BENCH_DIR.
func bigLog(b *testing.B) (*sqlite.Store, string, string) {
	b.Helper()
	bigOnce.Do(func() {
		ctx := context.Background()
		start := time.Now()
		dir, keep := os.LookupEnv(benchDirEnv)
		if keep {
			bigErr = os.MkdirAll(dir, 0o755)
		} else {
			dir, bigErr = os.MkdirTemp("", "auditlog-bench-")
			bigDir = dir // removed by TestMain
		}
		if bigErr != nil {
			return
		}
		if bigSt, bigErr = sqlite.Open(ctx, filepath.Join(dir, "big.db"), store.Options{Migrate: true, Synchronous: store.SyncNormal}); bigErr != nil {
			return
		}
		s, vkey := testKey(b)
		bigKey = vkey
		if cp, err := bigSt.LatestCheckpoint(ctx); err == nil && cp.Size == bigSize {
			b.Logf("reusing the %d-entry log in %s", bigSize, dir)
			bigPath = dir
			return
		}
		in, err := NewIntegrator(bigSt, Config{Signer: s, HistoryPath: filepath.Join(dir, HistoryFile), BatchSize: 20000})
		if err != nil {
			bigErr = err
			return
		}
		size, err := bigSt.AuditSize(ctx)
		if err != nil {
			bigErr = err
			return
		}
		evs := make([]store.AuditEvent, 10000)
		for done := int(size); done < bigSize; done += len(evs) {
			evs = evs[:min(len(evs), bigSize-done)]
			for i := range evs {
				evs[i] = testEvent(b, done+i)
			}
			if _, bigErr = bigSt.AppendEvents(ctx, evs); bigErr != nil {
				return
			}
			if _, bigErr = in.IntegrateOnce(ctx); bigErr != nil {
				return
			}
		}
		bigPath = dir
		b.Logf("built a %d-entry log in %v", bigSize, time.Since(start))
	})
	if bigErr != nil {
		b.Fatal(bigErr)
	}
	return bigSt, bigKey, bigPath
}

// BenchmarkInclusionProof1M measures inclusion proofs at random indexes in
// a 1,000,000-entry tree read from SQLite, reporting p50 and p99 (each op
// is 1,000 proofs): reader=store is ProveInclusion on the store (the CLI),
// reader=cached goes through the upper-hash cache the node's Handler uses
// (warm after the first op).
func BenchmarkInclusionProof1M(b *testing.B) {
	st, _, _ := bigLog(b)
	for _, tc := range []struct {
		name string
		r    Reader
	}{{"store", st}, {"cached", newHashCache(st)}} {
		b.Run("reader="+tc.name, func(b *testing.B) {
			ctx := context.Background()
			r := rand.New(rand.NewPCG(3, 4))
			var lat []time.Duration
			for b.Loop() { // 1,000 proofs per op, for a meaningful p99
				for range 1000 {
					t0 := time.Now()
					if _, err := ProveInclusion(ctx, tc.r, r.Int64N(bigSize), bigSize); err != nil {
						b.Fatal(err)
					}
					lat = append(lat, time.Since(t0))
				}
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}

// BenchmarkVerify1M measures a full offline verify (every entry re-hashed,
// every tile checked, root and signature) of an exported 1,000,000-entry log.
func BenchmarkVerify1M(b *testing.B) {
	st, vkey, dir := bigLog(b)
	ctx := context.Background()
	out := filepath.Join(dir, "export")
	if _, err := os.Stat(filepath.Join(out, "checkpoint")); err != nil {
		t0 := time.Now()
		if _, err := Export(ctx, StoreSource{R: st}, out); err != nil {
			b.Fatal(err)
		}
		b.Logf("exported in %v", time.Since(t0))
	}
	b.ResetTimer()
	for b.Loop() {
		res, err := Verify(ctx, DirSource(out), vkey, VerifyOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if res.Checkpoint.Size != bigSize {
			b.Fatalf("size %d", res.Checkpoint.Size)
		}
	}
}

// BenchmarkCheckFork1M measures the start-up fork check on 1,000,000 entries.
func BenchmarkCheckFork1M(b *testing.B) {
	st, _, dir := bigLog(b)
	ctx := context.Background()
	for b.Loop() {
		if err := CheckFork(ctx, st, filepath.Join(dir, HistoryFile)); err != nil {
			b.Fatal(err)
		}
	}
}
