package storetest

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/countersign/countersign/internal/store"
)

// BenchmarkCommitSignatures measures CommitSignatures at batch sizes 1, 16
// and 128; ns/op is per batch and rows/s is reported. open returns a fresh
// migrated store.
func BenchmarkCommitSignatures(b *testing.B, open func(b *testing.B) store.Store) {
	for _, size := range []int{1, 16, 128} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			s := open(b)
			ctx := b.Context()
			n := 0
			b.ReportAllocs()
			for b.Loop() {
				ws := make([]store.SignatureWrite, size)
				for i := range ws {
					ws[i] = write("bench", fmt.Sprintf("k%d", n), n)
					n++
				}
				if _, err := s.CommitSignatures(ctx, ws); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

// BenchmarkCommitter measures the group committer under parallel callers
// (GOMAXPROCS × parallelism goroutines); ns/op is per signature. It reports
// rows/s and the mean batch size.
func BenchmarkCommitter(b *testing.B, open func(b *testing.B) store.Store) {
	for _, par := range []int{4, 32} {
		b.Run(fmt.Sprintf("parallelism=%d", par), func(b *testing.B) {
			s := open(b)
			ctx := b.Context()
			c := store.NewCommitter(ctx, s, store.CommitterConfig{})
			var seq atomic.Int64
			b.SetParallelism(par)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					n := int(seq.Add(1))
					if _, err := c.Commit(ctx, write("bench", fmt.Sprintf("k%d", n), n)); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			if err := c.Close(); err != nil {
				b.Fatal(err)
			}
			st := c.Stats()
			b.ReportMetric(float64(st.Writes)/b.Elapsed().Seconds(), "rows/s")
			b.ReportMetric(st.MeanBatch(), "rows/batch")
		})
	}
}

// BenchmarkAppendEvents measures AppendEvents at batch sizes 1, 64 and 256
// (the audit log's own appends: playbook steps, key events, probes); ns/op
// is per batch and events/s is reported.
func BenchmarkAppendEvents(b *testing.B, open func(b *testing.B) store.Store) {
	for _, size := range []int{1, 64, 256} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			s := open(b)
			ctx := b.Context()
			n := 0
			b.ReportAllocs()
			for b.Loop() {
				evs := make([]store.AuditEvent, size)
				for i := range evs {
					evs[i] = event("bench.event", "bench", fmt.Sprintf("e%d", n), n)
					n++
				}
				if _, err := s.AppendEvents(ctx, evs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkPutTreeHashes measures PutTreeHashes with 512 hashes per call
// (about what integrating 256 leaves writes); hashes/s is reported.
func BenchmarkPutTreeHashes(b *testing.B, open func(b *testing.B) store.Store) {
	const per = 512
	s := open(b)
	ctx := b.Context()
	var next int64
	b.ReportAllocs()
	for b.Loop() {
		hs := make([]store.IndexedHash, per)
		for i := range hs {
			hs[i] = store.IndexedHash{Index: next, Hash: [32]byte{byte(next), byte(next >> 8), byte(next >> 16), 1}}
			next++
		}
		if err := s.PutTreeHashes(ctx, next/2, hs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(next)/b.Elapsed().Seconds(), "hashes/s")
}
