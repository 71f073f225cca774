package node

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/keys"
	"github.com/countersign/countersign/internal/store"
)

// resolvedKey is a key version ready to sign or verify with.
type resolvedKey struct {
	kv     store.KeyVersion
	alg    keys.Algorithm
	pub    crypto.PublicKey
	chain  []*x509.Certificate
	signer crypto.Signer // nil until first needed; only for enabled versions
}

type keyEntry struct {
	versions []*resolvedKey // ascending by version
	expires  time.Time
}

// keyCache caches a tenant's key versions and opened signers for ttl, so the
// sign path reads no key rows from the store. Opening a signer (KDF, HSM
// login) happens once per provider URI. Concurrent misses share one load
// and one open (loads, opens): when an entry expires under load, or a cold
// node takes its first burst, the store sees one read and the KDF runs
// once, not once per waiting request.
type keyCache struct {
	store Store
	mat   KeyMaterial
	ttl   time.Duration
	now   func() time.Time

	loads singleflight.Group // by tenant + "\x00" + name
	opens singleflight.Group // by provider URI

	mu      sync.Mutex
	entries map[[2]string]*keyEntry  // c.mu must be held
	signers map[string]crypto.Signer // by provider URI; c.mu must be held
}

func newKeyCache(s Store, m KeyMaterial, ttl time.Duration, now func() time.Time) *keyCache {
	return &keyCache{store: s, mat: m, ttl: ttl, now: now,
		entries: make(map[[2]string]*keyEntry), signers: make(map[string]crypto.Signer)}
}

var errKeyNotFound = errors.New("node: key not found")

// versions returns the tenant's versions of name, ascending.
func (c *keyCache) versions(ctx context.Context, tenant, name string) ([]*resolvedKey, error) {
	k := [2]string{tenant, name}
	now := c.now()
	c.mu.Lock()
	e := c.entries[k]
	c.mu.Unlock()
	if e != nil && now.Before(e.expires) {
		return e.versions, nil
	}
	// The load is shared by every request waiting for it, so it must not
	// fail because the first of them went away.
	v, err := shared(ctx, &c.loads, tenant+"\x00"+name, func(ctx context.Context) (any, error) {
		return c.load(ctx, k)
	})
	if err != nil {
		return nil, err
	}
	return v.([]*resolvedKey), nil
}

// shared runs fn once for every caller waiting on key in g. fn runs under
// ctx without its cancellation (the first caller leaving must not fail the
// others); each caller still stops waiting when its own ctx ends.
func shared(ctx context.Context, g *singleflight.Group, key string, fn func(ctx context.Context) (any, error)) (any, error) {
	ch := g.DoChan(key, func() (any, error) { return fn(context.WithoutCancel(ctx)) })
	select {
	case r := <-ch:
		return r.Val, r.Err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// load reads k's versions from the store and caches them, unless a load
// that finished while this one waited to start already did.
func (c *keyCache) load(ctx context.Context, k [2]string) ([]*resolvedKey, error) {
	tenant, name := k[0], k[1]
	now := c.now()
	c.mu.Lock()
	e := c.entries[k]
	c.mu.Unlock()
	if e != nil && now.Before(e.expires) {
		return e.versions, nil
	}
	kvs, err := c.store.KeyVersions(ctx, tenant, name)
	if errors.Is(err, store.ErrNotFound) || (err == nil && len(kvs) == 0) {
		return nil, errKeyNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("node: load key %q: %w", name, err)
	}
	e = &keyEntry{expires: now.Add(c.ttl)}
	for _, kv := range kvs {
		alg, err := keys.ParseAlgorithm(kv.Algorithm)
		if err != nil {
			return nil, fmt.Errorf("node: key %q v%d: %w", name, kv.Version, err)
		}
		rk := &resolvedKey{kv: kv, alg: alg}
		if kv.State != store.KeyDestroyed || kv.PublicKeyPEM != "" {
			rk.pub, rk.chain, err = c.mat.VerifyMaterial(kv)
			if err != nil {
				return nil, fmt.Errorf("node: key %q v%d material: %w", name, kv.Version, err)
			}
		}
		e.versions = append(e.versions, rk)
	}
	c.mu.Lock()
	c.entries[k] = e
	c.mu.Unlock()
	return e.versions, nil
}

// current returns the newest version of the key, ready to sign, or a
// client-facing error: 404 if the tenant has no such key, 409 if its newest
// version is not enabled.
func (c *keyCache) current(ctx context.Context, tenant, name string) (*resolvedKey, error) {
	vs, err := c.versions(ctx, tenant, name)
	if errors.Is(err, errKeyNotFound) {
		return nil, problem(http.StatusNotFound, api.TypeKeyNotFound, fmt.Sprintf("no key %q", name))
	}
	if err != nil {
		return nil, unavailable("key store unavailable", 1, err)
	}
	rk := vs[len(vs)-1]
	if rk.kv.State != store.KeyEnabled {
		return nil, problem(http.StatusConflict, api.TypeKeyDisabled,
			fmt.Sprintf("key %q version %d is %s and cannot sign", name, rk.kv.Version, rk.kv.State))
	}
	if err := c.openSigner(ctx, rk); err != nil {
		return nil, unavailable("key provider unavailable", 1, err)
	}
	return rk, nil
}

func (c *keyCache) openSigner(ctx context.Context, rk *resolvedKey) error {
	c.mu.Lock()
	if rk.signer != nil {
		c.mu.Unlock()
		return nil
	}
	s, ok := c.signers[rk.kv.ProviderURI]
	c.mu.Unlock()
	if !ok {
		// One open per provider URI however many requests wait for it (a
		// KDF or an HSM login is expensive); the waiters share its result.
		v, err := shared(ctx, &c.opens, rk.kv.ProviderURI, func(ctx context.Context) (any, error) {
			c.mu.Lock()
			s, ok := c.signers[rk.kv.ProviderURI]
			c.mu.Unlock()
			if ok {
				return s, nil
			}
			return c.mat.SignerFor(ctx, rk.kv)
		})
		if err != nil {
			return fmt.Errorf("node: open signer for %s v%d: %w", rk.kv.Name, rk.kv.Version, err)
		}
		if s, ok = v.(crypto.Signer); !ok || s == nil {
			return fmt.Errorf("node: open signer for %s v%d: provider returned no signer", rk.kv.Name, rk.kv.Version)
		}
	}
	c.mu.Lock()
	c.signers[rk.kv.ProviderURI] = s
	rk.signer = s
	c.mu.Unlock()
	return nil
}
