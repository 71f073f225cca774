package storetest

import (
	"crypto/sha256"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/bench"
	"github.com/countersign/countersign/internal/store"
)

// BenchmarkCommitSignatures measures CommitSignatures at batch sizes 1, 16,
// 64 and 128 with rows the size the node writes (benchWrite); ns/op is per
// batch, and rows/s and the process CPU per row (cpu-µs/row: wall time
// includes fsync waits and, on a shared machine, other people's load) are
// reported. open returns a fresh migrated store.
func BenchmarkCommitSignatures(b *testing.B, open func(b *testing.B) store.Store) {
	for _, size := range []int{1, 16, 64, 128} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			s := open(b)
			ctx := b.Context()
			n := 0
			b.ReportAllocs()
			cpu0, cpuOK := bench.ProcessCPU()
			for b.Loop() {
				ws := make([]store.SignatureWrite, size)
				for i := range ws {
					ws[i] = benchWrite(n)
					n++
				}
				if _, err := s.CommitSignatures(ctx, ws); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "rows/s")
			if cpu1, ok := bench.ProcessCPU(); cpuOK && ok && n > 0 {
				b.ReportMetric(float64(cpu1-cpu0)/float64(time.Microsecond)/float64(n), "cpu-µs/row")
			}
		})
	}
}

// benchWrite is signature n as the node writes it for an ecdsa-p256 raw
// signature: field sizes and the audit entry's length match a real row, so
// page and index costs are representative.
func benchWrite(n int) store.SignatureWrite {
	tm := at(n)
	idem := fmt.Sprintf("bench-18b2c4f0a1d3e5f7-%d", n)
	id := fmt.Sprintf("sig_%013x%012x", tm.UnixMicro(), n)
	rh := sha256.Sum256([]byte(idem))
	dd := sha256.Sum256([]byte(id))
	sg := make([]byte, 71)
	copy(sg, rh[:])
	copy(sg[32:], dd[:])
	s := store.Signature{
		ID: id, TenantID: "ten_dev", IdempotencyKey: idem, RequestHash: rh[:],
		KeyName: "default", KeyVersion: 1, Format: "raw", Algorithm: "ecdsa-p256",
		AlgorithmOID: "1.2.840.10045.4.3.2", DigestAlgorithm: "sha256", DigestOID: "2.16.840.1.101.3.4.2.1",
		DocumentDigest: dd[:], Signature: sg, Release: "dev", Instance: "bench-host-12345", SignedAt: tm,
	}
	ev := event("signature.created", s.TenantID, "signature:"+id, n)
	// A signature.created entry is ~620 bytes of canonical JSON.
	ev.Entry = append(ev.Entry[:len(ev.Entry)-1:len(ev.Entry)-1], `,"details":{"pad":"`+strings.Repeat("x", 620-len(ev.Entry)-20)+`"}}`...)
	ev.Actor, ev.Release, ev.Instance = "tenant:"+s.TenantID, s.Release, s.Instance
	return store.SignatureWrite{Signature: s, Event: ev}
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
