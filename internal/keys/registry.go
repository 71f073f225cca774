package keys

import (
	"context"
	"crypto"
	"crypto/rsa"
	"errors"
	"fmt"
	"strings"
	"sync"
)

// ErrUnknownScheme is returned for a URI whose scheme has no registered
// provider.
var ErrUnknownScheme = errors.New("keys: no provider registered for URI scheme")

// Destroyer is implemented by providers that can delete key material. It is
// found by type assertion; deleting a key that is already gone is not an
// error.
type Destroyer interface {
	Destroy(ctx context.Context, uri string) error
}

// Scheme returns the scheme of a key URI ("soft" for "soft:dev/k.key").
func Scheme(uri string) (string, error) {
	scheme, rest, ok := strings.Cut(uri, ":")
	if !ok || scheme == "" || rest == "" {
		return "", fmt.Errorf("keys: malformed key URI %q (want <scheme>:<location>)", uri)
	}
	return scheme, nil
}

// Registry routes key URIs to providers by scheme and caches opened signers
// by URI: opening a soft key runs a deliberately slow KDF, and an HSM lookup
// costs a round trip, so each URI is opened once per process. Safe for
// concurrent use.
type Registry struct {
	mu        sync.Mutex
	providers map[string]Provider
	signers   map[string]*openSigner
}

// openSigner is one cache entry; done is closed when s/err are set, so
// concurrent callers of the same URI wait for a single open.
type openSigner struct {
	done chan struct{}
	s    crypto.Signer
	err  error
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{providers: map[string]Provider{}, signers: map[string]*openSigner{}}
}

// Register adds the provider for scheme. A scheme can be registered once.
func (r *Registry) Register(scheme string, p Provider) error {
	if scheme == "" || strings.Contains(scheme, ":") || p == nil {
		return fmt.Errorf("keys: register: invalid scheme %q or nil provider", scheme)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.providers[scheme]; ok {
		return fmt.Errorf("keys: register: scheme %q already registered", scheme)
	}
	r.providers[scheme] = p
	return nil
}

// Provider returns the provider registered for scheme.
func (r *Registry) Provider(scheme string) (Provider, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.providers[scheme]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownScheme, scheme)
	}
	return p, nil
}

// Generate makes a new key in the provider registered for scheme.
func (r *Registry) Generate(ctx context.Context, scheme string, alg Algorithm, label string) (string, crypto.PublicKey, error) {
	p, err := r.Provider(scheme)
	if err != nil {
		return "", nil, err
	}
	return p.Generate(ctx, alg, label)
}

// Signer returns the signer for uri, opening it on first use.
func (r *Registry) Signer(ctx context.Context, uri string) (crypto.Signer, error) {
	scheme, err := Scheme(uri)
	if err != nil {
		return nil, err
	}
	p, err := r.Provider(scheme)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	e, ok := r.signers[uri]
	if !ok {
		e = &openSigner{done: make(chan struct{})}
		r.signers[uri] = e
	}
	r.mu.Unlock()
	if ok {
		select {
		case <-e.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if e.err != nil {
			return r.Signer(ctx, uri) // the opener failed and dropped the entry; try ourselves
		}
		return e.s, nil
	}
	e.s, e.err = p.Signer(ctx, uri)
	if e.err != nil {
		r.mu.Lock()
		delete(r.signers, uri)
		r.mu.Unlock()
	}
	close(e.done)
	return e.s, e.err
}

// Forget drops the cached signer for uri (after destruction, or to force a
// reopen).
func (r *Registry) Forget(uri string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.signers, uri)
}

// Destroy deletes the key material at uri if its provider is a Destroyer,
// and forgets the cached signer. It wraps ErrUnsupported otherwise.
func (r *Registry) Destroy(ctx context.Context, uri string) error {
	scheme, err := Scheme(uri)
	if err != nil {
		return err
	}
	p, err := r.Provider(scheme)
	if err != nil {
		return err
	}
	r.Forget(uri)
	d, ok := p.(Destroyer)
	if !ok {
		return fmt.Errorf("keys: provider %q cannot delete key material: %w", scheme, ErrUnsupported)
	}
	return d.Destroy(ctx, uri)
}

// Close closes every provider and empties the cache.
func (r *Registry) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for scheme, p := range r.providers {
		if err := p.Close(); err != nil {
			errs = append(errs, fmt.Errorf("keys: close provider %q: %w", scheme, err))
		}
	}
	r.providers = map[string]Provider{}
	r.signers = map[string]*openSigner{}
	return errors.Join(errs...)
}

// SignerOpts normalises signing options for providers: a PSS request with
// PSSSaltLengthAuto becomes salt = hash length, the salt every PSS
// algorithm here is defined with (in-memory keys would otherwise use the
// maximum salt, which some verifiers reject, and PKCS#11 tokens refuse Auto).
func SignerOpts(opts crypto.SignerOpts) crypto.SignerOpts {
	if p, ok := opts.(*rsa.PSSOptions); ok && p.SaltLength == rsa.PSSSaltLengthAuto {
		return &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: p.Hash}
	}
	return opts
}
