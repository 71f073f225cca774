// Package bench measures the signing service against the raw crypto limit
// of the same machine, in the same run: the number that matters is the
// ratio, since absolute rates depend on the hardware.
//
// Load comes from a closed-loop Go load generator (N workers, each waiting
// for its answer before sending again), each worker on its own keep-alive
// HTTP/1.1 connection (SignConn), so what is measured is what a client
// sees, including HTTP and JSON on the server side, while the generator's
// own CPU, taken from the same cores, stays small.
package bench

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/countersign/countersign/internal/keys"
)

// CryptoLimit is the raw signing rate of one algorithm on this machine.
type CryptoLimit struct {
	Algorithm  string  `json:"algorithm"`
	SingleCore float64 `json:"single_core_ops_per_s"`
	AllCores   float64 `json:"all_cores_ops_per_s"`
	Cores      int     `json:"cores"`
	// CPUPerOpMicro is the CPU time one signature takes, measured as this
	// process's CPU time over the single-core run (1e6 / SingleCore where
	// CPU time cannot be read). On a busy machine the single-core rate
	// falls with the share of the core this process gets; CPU time per
	// signature does not, so it is what server CPU is compared with.
	CPUPerOpMicro float64 `json:"cpu_per_op_us"`
}

// MeasureCryptoLimit signs SHA-256/384 digests with an in-memory key of alg
// for d on one goroutine, then for d on GOMAXPROCS goroutines.
func MeasureCryptoLimit(alg keys.Algorithm, d time.Duration) (CryptoLimit, error) {
	signer, opts, err := memKey(alg)
	if err != nil {
		return CryptoLimit{}, err
	}
	var digest []byte
	switch opts.HashFunc() {
	case crypto.SHA384:
		h := sha512.Sum384([]byte("countersign bench"))
		digest = h[:]
	case crypto.SHA512:
		h := sha512.Sum512([]byte("countersign bench"))
		digest = h[:]
	case 0:
		digest = []byte("countersign bench message of a typical digest len")
	default:
		h := sha256.Sum256([]byte("countersign bench"))
		digest = h[:]
	}
	run := func(workers int) (rate float64, cpuPerOp time.Duration, err error) {
		var n atomic.Int64
		var firstErr atomic.Value
		deadline := time.Now().Add(d)
		var wg sync.WaitGroup
		cpu0, cpuOK := ProcessCPU()
		start := time.Now()
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(deadline) {
					if _, err := signer.Sign(rand.Reader, digest, opts); err != nil {
						firstErr.CompareAndSwap(nil, err)
						return
					}
					n.Add(1)
				}
			}()
		}
		wg.Wait()
		elapsed := time.Since(start)
		cpu1, cpuOK1 := ProcessCPU()
		if e, _ := firstErr.Load().(error); e != nil {
			return 0, 0, e
		}
		ops := n.Load()
		if cpuOK && cpuOK1 && ops > 0 {
			cpuPerOp = (cpu1 - cpu0) / time.Duration(ops)
		}
		return float64(ops) / elapsed.Seconds(), cpuPerOp, nil
	}
	single, cpuPerOp, err := run(1)
	if err != nil {
		return CryptoLimit{}, err
	}
	cores := runtime.GOMAXPROCS(0)
	all, _, err := run(cores)
	if err != nil {
		return CryptoLimit{}, err
	}
	perOp := 1e6 / single
	if cpuPerOp > 0 {
		perOp = float64(cpuPerOp) / float64(time.Microsecond)
	}
	return CryptoLimit{Algorithm: string(alg), SingleCore: single, AllCores: all, Cores: cores, CPUPerOpMicro: perOp}, nil
}

func memKey(alg keys.Algorithm) (crypto.Signer, crypto.SignerOpts, error) {
	switch alg {
	case keys.ECDSAP256:
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		return k, crypto.SHA256, err
	case keys.ECDSAP384:
		k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		return k, crypto.SHA384, err
	case keys.Ed25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, &ed25519.Options{Hash: crypto.SHA512}, err
	case keys.RSA2048, keys.RSA2048PSS:
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		return k, crypto.SHA256, err
	case keys.RSA3072, keys.RSA3072PSS:
		k, err := rsa.GenerateKey(rand.Reader, 3072)
		return k, crypto.SHA256, err
	}
	return nil, nil, fmt.Errorf("bench: unknown algorithm %q", alg)
}

// Latencies accumulates request latencies; safe for concurrent use.
type Latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

// Add records one latency.
func (l *Latencies) Add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// Quantile returns the q-quantile (0..1), or 0 with no samples.
func (l *Latencies) Quantile(q float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0
	}
	sort.Slice(l.d, func(i, j int) bool { return l.d[i] < l.d[j] })
	i := int(q * float64(len(l.d)-1))
	return l.d[i]
}

// Load runs workers closed-loop calls of op for d and returns how many
// succeeded and failed. op gets the worker index and a sequence number.
func Load(ctx context.Context, workers int, d time.Duration, lat *Latencies, op func(ctx context.Context, worker int, seq int64) error) (ok, failed int64, firstErr error, elapsed time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var nOK, nFail atomic.Int64
	var errOnce sync.Once
	var wg sync.WaitGroup
	var seq atomic.Int64
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				t0 := time.Now()
				err := op(ctx, w, seq.Add(1))
				if ctx.Err() != nil && err != nil {
					return // cut off by the deadline: neither success nor failure
				}
				if err != nil {
					nFail.Add(1)
					errOnce.Do(func() { firstErr = err })
					continue
				}
				nOK.Add(1)
				lat.Add(time.Since(t0))
			}
		}()
	}
	wg.Wait()
	return nOK.Load(), nFail.Load(), firstErr, time.Since(start)
}
