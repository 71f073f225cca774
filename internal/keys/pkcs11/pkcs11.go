//go:build cgo

package pkcs11

import (
	"context"
	"crypto"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/ThalesGroup/crypto11"
	p11 "github.com/miekg/pkcs11"

	"github.com/countersign/countersign/internal/keys"
)

var (
	_ keys.Provider  = (*Provider)(nil)
	_ keys.Destroyer = (*Provider)(nil)
)

// Provider generates and uses keys on one token. Safe for concurrent use.
//
// crypto11 initialises a module once per process and finalises it when its
// last Context closes; recovery after a token restart therefore only sees
// the new token state when no other Provider holds the same module.
type Provider struct {
	cfg Config
	pin string

	mu     sync.Mutex // guards ctx, gen, closed
	ctx    *crypto11.Context
	gen    uint64 // incremented on every reconnect
	closed bool

	ed edRaw // Ed25519 keys, which crypto11 cannot use (eddsa.go)
}

// New opens the module, finds the token by label and logs in.
func New(cfg Config) (*Provider, error) {
	if cfg.ModulePath == "" || cfg.TokenLabel == "" {
		return nil, errors.New("pkcs11: config needs ModulePath and TokenLabel")
	}
	pin, err := cfg.pin()
	if err != nil {
		return nil, err
	}
	p := &Provider{cfg: cfg, pin: pin}
	if p.ctx, err = p.configure(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Provider) configure() (*crypto11.Context, error) {
	c, err := crypto11.Configure(&crypto11.Config{Path: p.cfg.ModulePath, TokenLabel: p.cfg.TokenLabel,
		Pin: p.pin, MaxSessions: p.cfg.MaxSessions})
	if err != nil {
		return nil, wrap("open token "+p.cfg.TokenLabel, err)
	}
	return c, nil
}

// current returns the live context and its generation.
func (p *Provider) current() (*crypto11.Context, uint64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, 0, errors.New("pkcs11: provider is closed")
	}
	if p.ctx == nil {
		c, err := p.configure()
		if err != nil {
			return nil, 0, err
		}
		p.ctx, p.gen = c, p.gen+1
	}
	return p.ctx, p.gen, nil
}

// reconnect closes the context of generation gen and configures a new one
// (unless another caller already did).
func (p *Provider) reconnect(gen uint64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("pkcs11: provider is closed")
	}
	if p.gen != gen && p.ctx != nil {
		return nil
	}
	if p.ctx != nil {
		_ = p.ctx.Close() // the old sessions are dead; closing only releases them
		p.ctx = nil
	}
	c, err := p.configure()
	if err != nil {
		p.gen++ // a later call retries configuring from scratch
		return err
	}
	p.ctx, p.gen = c, p.gen+1
	return nil
}

// do runs fn on the live context, recovering once from errors that a
// token restart or a lost session causes.
func (p *Provider) do(op string, fn func(*crypto11.Context) error) error {
	c, gen, err := p.current()
	if err != nil {
		return err
	}
	err = fn(c)
	if err == nil || !recoverable(err) {
		return wrap(op, err)
	}
	if rerr := p.reconnect(gen); rerr != nil {
		return fmt.Errorf("%w (recovery failed: %w)", wrap(op, err), rerr)
	}
	if c, _, err = p.current(); err != nil {
		return err
	}
	return wrap(op, fn(c))
}

// Generate makes a key pair on the token; label becomes CKA_LABEL and a
// random 16-byte CKA_ID identifies it in the URI.
func (p *Provider) Generate(ctx context.Context, alg keys.Algorithm, label string) (string, crypto.PublicKey, error) {
	if err := ctx.Err(); err != nil {
		return "", nil, err
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return "", nil, err
	}
	var gen func(c *crypto11.Context) (crypto11.Signer, error)
	switch alg {
	case keys.ECDSAP256, keys.ECDSAP384:
		curve := elliptic.P256()
		if alg == keys.ECDSAP384 {
			curve = elliptic.P384()
		}
		gen = func(c *crypto11.Context) (crypto11.Signer, error) {
			return c.GenerateECDSAKeyPairWithLabel(id, []byte(label), curve)
		}
	case keys.RSA2048, keys.RSA2048PSS, keys.RSA3072, keys.RSA3072PSS:
		bits := 2048
		if alg == keys.RSA3072 || alg == keys.RSA3072PSS {
			bits = 3072
		}
		gen = func(c *crypto11.Context) (crypto11.Signer, error) {
			return c.GenerateRSAKeyPairWithLabel(id, []byte(label), bits)
		}
	case keys.Ed25519:
		pub, err := p.generateEd25519(id, label)
		if err != nil {
			return "", nil, err
		}
		return URI{Token: p.cfg.TokenLabel, ID: id, Object: label}.String(), pub, nil
	default:
		return "", nil, fmt.Errorf("pkcs11: %q: %w", alg, keys.ErrUnsupported)
	}
	var k crypto11.Signer
	if err := p.do("generate "+string(alg), func(c *crypto11.Context) (err error) {
		k, err = gen(c)
		return err
	}); err != nil {
		return "", nil, err
	}
	if !keys.KeyMatches(alg, k.Public()) {
		return "", nil, fmt.Errorf("pkcs11: token generated a %T key for %s", k.Public(), alg)
	}
	return URI{Token: p.cfg.TokenLabel, ID: id, Object: label}.String(), k.Public(), nil
}

// Signer finds the key pair named by uri on the token.
func (p *Provider) Signer(ctx context.Context, uri string) (crypto.Signer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	u, err := p.parse(uri)
	if err != nil {
		return nil, err
	}
	k, gen, err := p.find(u)
	if errors.Is(err, errUnsupportedKeyType) {
		priv, pub, err := p.findEd25519(u)
		if err != nil {
			return nil, err
		}
		return &edSigner{p: p, uri: u, pub: pub, priv: priv}, nil
	}
	if err != nil {
		return nil, err
	}
	return &signer{p: p, uri: u, k: k, gen: gen, pub: k.Public()}, nil
}

func (p *Provider) parse(uri string) (URI, error) {
	u, err := ParseURI(uri)
	if err != nil {
		return URI{}, err
	}
	if u.Token != p.cfg.TokenLabel {
		return URI{}, fmt.Errorf("pkcs11: key %s is on token %q, this provider serves %q", uri, u.Token, p.cfg.TokenLabel)
	}
	return u, nil
}

func (p *Provider) find(u URI) (crypto11.Signer, uint64, error) {
	var (
		k   crypto11.Signer
		gen uint64
	)
	err := p.do("find key "+u.String(), func(c *crypto11.Context) error {
		// FindKeyPairs, unlike FindKeyPair, tells "no such key" (empty
		// result) apart from a token failure (error).
		ks, err := c.FindKeyPairs(u.ID, nil)
		if err != nil && strings.Contains(err.Error(), "unsupported key type") {
			// crypto11 cannot use the key (Ed25519): not a token failure.
			return fmt.Errorf("%w: %w", errUnsupportedKeyType, err)
		}
		k = nil
		if len(ks) > 0 {
			k = ks[0]
		}
		p.mu.Lock()
		gen = p.gen
		p.mu.Unlock()
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	if k == nil {
		return nil, 0, fmt.Errorf("%w: %s", ErrNotFound, u)
	}
	return k, gen, nil
}

// Destroy deletes the key pair's objects from the token. A key that is not
// there is not an error.
func (p *Provider) Destroy(ctx context.Context, uri string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	u, err := p.parse(uri)
	if err != nil {
		return err
	}
	k, _, err := p.find(u)
	if errors.Is(err, errUnsupportedKeyType) {
		return p.destroyEd25519(u)
	}
	if errors.Is(err, ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	return wrap("delete key "+u.String(), k.Delete())
}

// Close logs out and releases the module.
func (p *Provider) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	p.edClose() // before crypto11 finalises the module under its sessions
	if p.ctx == nil {
		return nil
	}
	err := p.ctx.Close()
	p.ctx = nil
	return err
}

// signer is a token key. After a recoverable failure it finds the key again
// on the reconnected context and retries once.
type signer struct {
	p   *Provider
	uri URI
	pub crypto.PublicKey

	mu  sync.Mutex // guards k, gen
	k   crypto11.Signer
	gen uint64
}

func (s *signer) Public() crypto.PublicKey { return s.pub }

// Sign signs a digest. *rsa.PSSOptions select PSS; PSSSaltLengthAuto is
// signed with salt = hash length (tokens refuse Auto).
func (s *signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	opts = keys.SignerOpts(opts)
	s.mu.Lock()
	k, gen := s.k, s.gen
	s.mu.Unlock()
	sig, err := k.Sign(rand.Reader, digest, opts)
	if err == nil {
		return sig, nil
	}
	if !recoverable(err) {
		return nil, wrap("sign with "+s.uri.String(), err)
	}
	if rerr := s.p.reconnect(gen); rerr != nil {
		return nil, fmt.Errorf("%w (recovery failed: %w)", wrap("sign with "+s.uri.String(), err), rerr)
	}
	k, gen, ferr := s.p.find(s.uri)
	if ferr != nil {
		return nil, fmt.Errorf("%w (recovery failed: %w)", wrap("sign with "+s.uri.String(), err), ferr)
	}
	s.mu.Lock()
	s.k, s.gen = k, gen
	s.mu.Unlock()
	sig, err = k.Sign(rand.Reader, digest, opts)
	return sig, wrap("sign with "+s.uri.String(), err)
}

// recoverable reports errors after which a fresh context may succeed: the
// token was re-initialised, removed or restarted, or sessions were lost.
func recoverable(err error) bool {
	var e p11.Error
	if !errors.As(err, &e) {
		return false
	}
	switch uint(e) {
	case p11.CKR_OBJECT_HANDLE_INVALID, p11.CKR_KEY_HANDLE_INVALID, p11.CKR_SESSION_HANDLE_INVALID,
		p11.CKR_SESSION_CLOSED, p11.CKR_DEVICE_REMOVED, p11.CKR_TOKEN_NOT_PRESENT, p11.CKR_DEVICE_ERROR,
		p11.CKR_USER_NOT_LOGGED_IN, p11.CKR_CRYPTOKI_NOT_INITIALIZED, p11.CKR_GENERAL_ERROR:
		return true
	}
	return false
}

// wrap turns a PKCS#11 error into *Error (nil stays nil).
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	var pe *Error
	if errors.As(err, &pe) {
		return err
	}
	var e p11.Error
	if !errors.As(err, &e) {
		return fmt.Errorf("pkcs11: %s: %w", op, err)
	}
	name := e.Error()
	if i := strings.Index(name, "CKR_"); i >= 0 {
		name = name[i:]
	}
	return &Error{Op: op, Code: uint(e), Name: name, Err: err}
}
