package reconcile

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// VerifyLimit is the raw ECDSA P-256 verification rate of this machine,
// measured like bench.MeasureCryptoLimit measures signing: one goroutine
// for d, then GOMAXPROCS goroutines for d, each verifying one fixed
// signature over a SHA-256 digest in a loop.
type VerifyLimit struct {
	SingleCore float64 `json:"single_core_ops_per_s"`
	AllCores   float64 `json:"all_cores_ops_per_s"`
	Cores      int     `json:"cores"`
}

// MeasureVerifyLimit measures the raw verify limit for d per phase.
func MeasureVerifyLimit(d time.Duration) (VerifyLimit, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return VerifyLimit{}, err
	}
	digest := sha256.Sum256([]byte("countersign verify bench"))
	sig, err := ecdsa.SignASN1(rand.Reader, k, digest[:])
	if err != nil {
		return VerifyLimit{}, err
	}
	run := func(workers int) (float64, error) {
		var n atomic.Int64
		var bad atomic.Bool
		deadline := time.Now().Add(d)
		var wg sync.WaitGroup
		start := time.Now()
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(deadline) {
					if !ecdsa.VerifyASN1(&k.PublicKey, digest[:], sig) {
						bad.Store(true)
						return
					}
					n.Add(1)
				}
			}()
		}
		wg.Wait()
		if bad.Load() {
			return 0, fmt.Errorf("reconcile: verify limit: a valid signature did not verify")
		}
		return float64(n.Load()) / time.Since(start).Seconds(), nil
	}
	single, err := run(1)
	if err != nil {
		return VerifyLimit{}, err
	}
	cores := runtime.GOMAXPROCS(0)
	all, err := run(cores)
	if err != nil {
		return VerifyLimit{}, err
	}
	return VerifyLimit{SingleCore: single, AllCores: all, Cores: cores}, nil
}
