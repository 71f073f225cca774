package probe

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/keys"
	"github.com/countersign/countersign/internal/pki"
	"github.com/countersign/countersign/internal/store"
)

// ErrKeyDrift marks a key that differs from the pinned one. Errors carrying
// it are *KeyDriftError.
var ErrKeyDrift = errors.New("probe: key differs from the pinned trust set")

// KeyDriftError says which key version differs from the pinned one and how.
type KeyDriftError struct {
	Tenant, Key string
	Version     int
	Reason      string // e.g. "public key differs", "version not pinned"
}

func (e *KeyDriftError) Error() string {
	return fmt.Sprintf("probe: key %s version %d: %s", keyLabel(e.Tenant, e.Key), e.Version, e.Reason)
}

// Is makes errors.Is(err, ErrKeyDrift) true.
func (e *KeyDriftError) Is(target error) bool { return target == ErrKeyDrift }

func keyLabel(tenant, name string) string {
	if tenant == "" {
		return name
	}
	return tenant + "/" + name
}

// TrustedKey is one pinned key version: what its signatures verify against.
type TrustedKey struct {
	Tenant    string // "" for the probe's own tenant
	Key       string
	Version   int
	Algorithm keys.Algorithm
	Public    crypto.PublicKey
	Chain     []*x509.Certificate // leaf first; may be empty
}

type trustID struct {
	tenant, key string
	version     int
}

// TrustSet is the pinned, out-of-band set of public keys and certificate
// chains signatures are verified against. It is immutable once built: a key
// change observed later is reported as drift, never absorbed. To accept a
// legitimate rotation, build a new TrustSet and hand it to
// Prober.SetTrustSet.
type TrustSet struct {
	keys  map[trustID]TrustedKey
	roots *x509.CertPool
}

// NewTrustSet pins ks. roots, if not nil, makes CMS verification require the
// signer certificate to chain to one of them.
func NewTrustSet(roots *x509.CertPool, ks ...TrustedKey) (*TrustSet, error) {
	ts := &TrustSet{keys: make(map[trustID]TrustedKey, len(ks)), roots: roots}
	for _, k := range ks {
		id := trustID{k.Tenant, k.Key, k.Version}
		switch {
		case k.Key == "" || k.Version < 1:
			return nil, fmt.Errorf("probe: trusted key %q version %d: name and version >= 1 required", k.Key, k.Version)
		case k.Public == nil && len(k.Chain) == 0:
			return nil, fmt.Errorf("probe: trusted key %s version %d: no public key", keyLabel(k.Tenant, k.Key), k.Version)
		case k.Public == nil:
			k.Public = k.Chain[0].PublicKey
		}
		if !keys.KeyMatches(k.Algorithm, k.Public) {
			return nil, fmt.Errorf("probe: trusted key %s version %d: public key is not a %s key", keyLabel(k.Tenant, k.Key), k.Version, k.Algorithm)
		}
		if len(k.Chain) > 0 && !pki.SamePublicKey(k.Public, k.Chain[0].PublicKey) {
			return nil, fmt.Errorf("probe: trusted key %s version %d: certificate key is not the public key", keyLabel(k.Tenant, k.Key), k.Version)
		}
		if _, dup := ts.keys[id]; dup {
			return nil, fmt.Errorf("probe: trusted key %s version %d listed twice", keyLabel(k.Tenant, k.Key), k.Version)
		}
		ts.keys[id] = k
	}
	return ts, nil
}

// TrustSetFromKeyVersions pins key versions read from the key inventory in
// the store (the out-of-band source the control plane has). Destroyed
// versions are pinned too: their old signatures stay verifiable.
func TrustSetFromKeyVersions(roots *x509.CertPool, kvs []store.KeyVersion) (*TrustSet, error) {
	ks := make([]TrustedKey, 0, len(kvs))
	for _, kv := range kvs {
		alg, err := keys.ParseAlgorithm(kv.Algorithm)
		if err != nil {
			return nil, fmt.Errorf("probe: key %s version %d: %w", keyLabel(kv.TenantID, kv.Name), kv.Version, err)
		}
		pub, chain, err := keys.VerifyMaterial(kv)
		if err != nil {
			return nil, fmt.Errorf("probe: %w", err)
		}
		ks = append(ks, TrustedKey{Tenant: kv.TenantID, Key: kv.Name, Version: kv.Version, Algorithm: alg, Public: pub, Chain: chain})
	}
	return NewTrustSet(roots, ks...)
}

// TrustSetFromAPI pins key descriptions (GET /v1/keys/{name}) of tenant.
// They must come from a trusted source, not from the node being probed.
func TrustSetFromAPI(roots *x509.CertPool, tenant string, aks ...api.Key) (*TrustSet, error) {
	var ks []TrustedKey
	for _, ak := range aks {
		for _, v := range ak.Versions {
			tk, err := trustedFromAPI(tenant, ak.Name, v)
			if err != nil {
				return nil, err
			}
			ks = append(ks, tk)
		}
	}
	return NewTrustSet(roots, ks...)
}

func trustedFromAPI(tenant, name string, v api.KeyVersion) (TrustedKey, error) {
	alg, err := keys.ParseAlgorithm(v.Algorithm)
	if err != nil {
		return TrustedKey{}, fmt.Errorf("probe: key %s version %d: %w", keyLabel(tenant, name), v.Version, err)
	}
	pub, err := pki.ParsePublicKeyPEM(v.PublicKeyPEM)
	if err != nil {
		return TrustedKey{}, fmt.Errorf("probe: key %s version %d: %w", keyLabel(tenant, name), v.Version, err)
	}
	var chain []*x509.Certificate
	if strings.TrimSpace(v.CertChainPEM) != "" {
		if chain, err = pki.ParseChainPEM(v.CertChainPEM); err != nil {
			return TrustedKey{}, fmt.Errorf("probe: key %s version %d: %w", keyLabel(tenant, name), v.Version, err)
		}
	}
	return TrustedKey{Tenant: tenant, Key: name, Version: v.Version, Algorithm: alg, Public: pub, Chain: chain}, nil
}

// KeySource describes keys; *client.Client pointed at a trusted base URL
// (never at the node being probed) satisfies it.
type KeySource interface {
	Key(ctx context.Context, name string) (*api.Key, error)
}

// FetchTrustSet pins the named keys of tenant as src describes them now.
func FetchTrustSet(ctx context.Context, src KeySource, roots *x509.CertPool, tenant string, names ...string) (*TrustSet, error) {
	aks := make([]api.Key, 0, len(names))
	for _, n := range names {
		k, err := src.Key(ctx, n)
		if err != nil {
			return nil, fmt.Errorf("probe: fetch key %q from the trusted source: %w", n, err)
		}
		if k.Name != n {
			return nil, fmt.Errorf("probe: trusted source answered key %q for %q", k.Name, n)
		}
		aks = append(aks, *k)
	}
	return TrustSetFromAPI(roots, tenant, aks...)
}

// Lookup returns the pinned version of tenant's key.
func (ts *TrustSet) Lookup(tenant, name string, version int) (TrustedKey, bool) {
	if ts == nil {
		return TrustedKey{}, false
	}
	k, ok := ts.keys[trustID{tenant, name, version}]
	return k, ok
}

// Versions lists the pinned versions of tenant's key, ascending.
func (ts *TrustSet) Versions(tenant, name string) []int {
	var vs []int
	for id := range maps.Keys(ts.keys) {
		if id.tenant == tenant && id.key == name {
			vs = append(vs, id.version)
		}
	}
	slices.Sort(vs)
	return vs
}

// Roots is the CMS trust anchor pool (may be nil).
func (ts *TrustSet) Roots() *x509.CertPool {
	if ts == nil {
		return nil
	}
	return ts.roots
}

// CheckServed compares a key description served by a probed node with the
// pinned one. Every version the node serves must be pinned with the same
// algorithm, public key and leaf certificate; otherwise it returns a
// *KeyDriftError. Versions pinned but no longer served are not drift (a
// node may hide destroyed versions).
func (ts *TrustSet) CheckServed(tenant string, served api.Key) error {
	for _, v := range served.Versions {
		pinned, ok := ts.Lookup(tenant, served.Name, v.Version)
		if !ok {
			return &KeyDriftError{Tenant: tenant, Key: served.Name, Version: v.Version, Reason: "version not pinned"}
		}
		got, err := trustedFromAPI(tenant, served.Name, v)
		if err != nil {
			return &KeyDriftError{Tenant: tenant, Key: served.Name, Version: v.Version, Reason: "unreadable: " + err.Error()}
		}
		switch {
		case got.Algorithm != pinned.Algorithm:
			return &KeyDriftError{Tenant: tenant, Key: served.Name, Version: v.Version,
				Reason: fmt.Sprintf("algorithm %s, pinned %s", got.Algorithm, pinned.Algorithm)}
		case !pki.SamePublicKey(got.Public, pinned.Public):
			return &KeyDriftError{Tenant: tenant, Key: served.Name, Version: v.Version,
				Reason: fmt.Sprintf("public key %.16s…, pinned %.16s…", pki.Fingerprint(got.Public), pki.Fingerprint(pinned.Public))}
		case len(got.Chain) > 0 && len(pinned.Chain) > 0 && !got.Chain[0].Equal(pinned.Chain[0]):
			return &KeyDriftError{Tenant: tenant, Key: served.Name, Version: v.Version, Reason: "leaf certificate differs"}
		}
	}
	return nil
}
