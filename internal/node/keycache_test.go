package node

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/keys"
	"github.com/countersign/countersign/internal/store"
)

// gatedKeys is a Store and KeyMaterial whose key reads wait for gate, so a
// test can pile requests up behind one cold cache entry. It counts reads
// and signer opens.
type gatedKeys struct {
	gate         chan struct{}
	reads, opens atomic.Int64
	key          *ecdsa.PrivateKey
	Store        // only KeyVersions is used
}

func (g *gatedKeys) KeyVersions(ctx context.Context, tenantID, name string) ([]store.KeyVersion, error) {
	g.reads.Add(1)
	select {
	case <-g.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return []store.KeyVersion{{TenantID: tenantID, Name: name, Version: 1, Algorithm: string(keys.ECDSAP256),
		ProviderURI: "soft:test", State: store.KeyEnabled, PublicKeyPEM: "unused"}}, nil
}

func (g *gatedKeys) SignerFor(ctx context.Context, kv store.KeyVersion) (crypto.Signer, error) {
	g.opens.Add(1)
	time.Sleep(10 * time.Millisecond) // a KDF: long enough for the others to pile up
	return g.key, nil
}

func (g *gatedKeys) VerifyMaterial(kv store.KeyVersion) (crypto.PublicKey, []*x509.Certificate, error) {
	return g.key.Public(), nil, nil
}

func newGatedKeys(t *testing.T) *gatedKeys {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &gatedKeys{gate: make(chan struct{}), key: k}
}

func TestKeyCacheSharesColdLoads(t *testing.T) {
	g := newGatedKeys(t)
	c := newKeyCache(g, g, time.Minute, time.Now)
	const n = 32
	var wg sync.WaitGroup
	signers := make([]crypto.Signer, n)
	for i := range n {
		wg.Go(func() {
			rk, err := c.current(t.Context(), "t1", "default")
			if err != nil {
				t.Error(err)
				return
			}
			signers[i] = rk.signer
		})
	}
	for g.reads.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // let the others queue behind the read
	close(g.gate)
	wg.Wait()
	if got := g.reads.Load(); got != 1 {
		t.Errorf("store reads = %d, want 1 for %d concurrent cold requests", got, n)
	}
	if got := g.opens.Load(); got != 1 {
		t.Errorf("signer opens = %d, want 1", got)
	}
	for i, s := range signers {
		if s != crypto.Signer(g.key) {
			t.Fatalf("request %d got signer %v, want the opened key", i, s)
		}
	}
}

func TestKeyCacheWaiterLeavesWithItsContext(t *testing.T) {
	g := newGatedKeys(t)
	c := newKeyCache(g, g, time.Minute, time.Now)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	_, err := c.versions(ctx, "t1", "default")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the caller's deadline while the read hangs", err)
	}
	// The shared read was not cancelled with that caller: it completes for
	// the next one.
	close(g.gate)
	vs, err := c.versions(t.Context(), "t1", "default")
	if err != nil || len(vs) != 1 {
		t.Fatalf("after release: %v, %v", vs, err)
	}
	if got := g.reads.Load(); got != 1 {
		t.Errorf("store reads = %d, want 1 (the second caller joins or reuses the first read)", got)
	}
}
