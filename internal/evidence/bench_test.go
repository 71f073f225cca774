package evidence

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var benchBundleMB = flag.Int("bundle-mb", 1024, "size in MiB of the snapshot parts in BenchmarkBundleVerify's bundle")

// BenchmarkBundleVerify verifies a bundle whose snapshot parts hold
// -bundle-mb MiB of random data (four parts), read from a file in
// t.TempDir(), and compares Verify's throughput with SHA-256 of the same
// bytes on one core in the same iteration: sha_mem hashes the parts in
// memory (the hash's own limit), sha_file hashes the bundle file as
// sha256sum would. ratio_to_sha = Verify MB/s / sha_mem MB/s; ns/op and
// MB/s are Verify's alone (the reference hashes run with the timer off).
func BenchmarkBundleVerify(b *testing.B) {
	const nparts = 4
	size := *benchBundleMB << 20
	src := mrand.NewChaCha8([32]byte{1})
	parts := make([]File, nparts)
	for i := range parts {
		parts[i] = File{Name: fmt.Sprintf("part-%d.bin", i), Data: make([]byte, size/nparts)}
		_, _ = src.Read(parts[i].Data) // ChaCha8 never fails
	}
	_, rep, files := bundleFiles(b, parts)
	lead, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "bundle.tar")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := Build(context.Background(), f, files, rep.Summary(), lead); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.SetBytes(fi.Size())
	b.ResetTimer()
	var verify, shaMem, shaFile time.Duration
	for b.Loop() {
		b.StopTimer() // ns/op and MB/s are Verify's alone
		start := time.Now()
		for _, p := range parts {
			sha256.Sum256(p.Data)
		}
		shaMem += time.Since(start)

		start = time.Now()
		if err := hashFile(path); err != nil {
			b.Fatal(err)
		}
		shaFile += time.Since(start)
		b.StartTimer()

		start = time.Now()
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		v, err := Verify(ctx, f, lead.Public())
		f.Close()
		verify += time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		if v.Files != len(files)+1 {
			b.Fatalf("verified %d files, want %d", v.Files, len(files)+1)
		}
	}
	mb := func(n int, d time.Duration) float64 { return float64(n) * float64(b.N) / (1 << 20) / d.Seconds() }
	b.ReportMetric(mb(int(fi.Size()), verify), "verify_MiB/s")
	b.ReportMetric(mb(size, shaMem), "sha_mem_MiB/s")
	b.ReportMetric(mb(int(fi.Size()), shaFile), "sha_file_MiB/s")
	b.ReportMetric(mb(int(fi.Size()), verify)/mb(size, shaMem), "ratio_to_sha")
	b.ReportMetric(mb(int(fi.Size()), verify)/mb(int(fi.Size()), shaFile), "ratio_to_sha_file")
}

// hashFile is sha256sum: the file through SHA-256 on one goroutine.
func hashFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	_, err = io.CopyBuffer(h, f, make([]byte, 1<<20))
	return err
}
