// Package soft is the key provider for encrypted key files (URI scheme
// "soft:"). Each key is one small JSON envelope holding the public key, the
// algorithm, scrypt parameters and salt, and the PKCS#8 private key encrypted
// with AES-256-GCM under a key derived from the provider's passphrase.
//
// Invariants: private key bytes are never written in the clear, never
// returned (signers wrap the key and expose only Public and Sign), and a key
// file is never overwritten: files are created 0600 through a temporary file
// that is hard-linked into place, which fails if the name exists.
package soft

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/countersign/countersign/internal/keys"
)

// Scheme is the URI scheme of this provider.
const Scheme = "soft"

// ErrWrongPassphrase is returned when a key file does not decrypt under the
// provider's passphrase (or was tampered with: AES-GCM cannot tell apart).
var ErrWrongPassphrase = errors.New("soft: wrong passphrase or corrupted key file")

// ErrNotFound is returned when the key file named by a URI does not exist.
var ErrNotFound = errors.New("soft: key file not found")

// Provider stores keys as encrypted files under one directory.
type Provider struct {
	dir     string
	pass    Passphrase
	n, r, p int
}

// Option configures a Provider.
type Option func(*Provider)

// WithScrypt sets the scrypt cost for keys generated from now on (files
// record their own parameters, so old files still open). Lower than the
// defaults only in tests.
func WithScrypt(n, r, p int) Option {
	return func(pr *Provider) { pr.n, pr.r, pr.p = n, r, p }
}

var _ keys.Provider = (*Provider)(nil)
var _ keys.Destroyer = (*Provider)(nil)

// New returns a provider for key files under dir (created 0700 if missing).
func New(dir string, pass Passphrase, opts ...Option) (*Provider, error) {
	if pass.Empty() {
		return nil, fmt.Errorf("soft: %w", ErrNoPassphrase)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("soft: key directory: %w", err)
	}
	pr := &Provider{dir: dir, pass: pass, n: DefaultScryptN, r: DefaultScryptR, p: DefaultScryptP}
	for _, o := range opts {
		o(pr)
	}
	return pr, nil
}

// Generate creates a key for alg and writes it to a new file named after
// label. It returns "soft:<file name>".
func (pr *Provider) Generate(ctx context.Context, alg keys.Algorithm, label string) (string, crypto.PublicKey, error) {
	if err := ctx.Err(); err != nil {
		return "", nil, err
	}
	priv, err := generate(alg)
	if err != nil {
		return "", nil, err
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return "", nil, fmt.Errorf("soft: marshal private key: %w", err)
	}
	defer clear(pkcs8)
	spki, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		return "", nil, fmt.Errorf("soft: marshal public key: %w", err)
	}
	env, err := seal(string(alg), spki, pkcs8, pr.pass, pr.n, pr.r, pr.p)
	if err != nil {
		return "", nil, fmt.Errorf("soft: encrypt key: %w", err)
	}
	b, err := json.MarshalIndent(env, "", "  ")
	if err != nil {
		return "", nil, err
	}
	name, err := fileName(label)
	if err != nil {
		return "", nil, err
	}
	if err := writeNew(pr.dir, name, append(b, '\n')); err != nil {
		return "", nil, err
	}
	return Scheme + ":" + name, priv.Public(), nil
}

// Signer decrypts the key file named by uri. Decryption runs scrypt; cache
// the result (keys.Registry does).
func (pr *Provider) Signer(ctx context.Context, uri string) (crypto.Signer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	path, err := pr.path(uri)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, uri)
	} else if err != nil {
		return nil, fmt.Errorf("soft: read key file: %w", err)
	}
	env, err := parseEnvelope(b)
	if err != nil {
		return nil, err
	}
	alg, err := keys.ParseAlgorithm(env.Algorithm)
	if err != nil {
		return nil, fmt.Errorf("soft: key file %s: %w", uri, err)
	}
	pkcs8, err := env.open(pr.pass)
	if err != nil {
		return nil, fmt.Errorf("soft: open %s: %w", uri, err)
	}
	defer clear(pkcs8)
	k, err := x509.ParsePKCS8PrivateKey(pkcs8)
	if err != nil {
		return nil, fmt.Errorf("soft: key file %s: parse private key: %w", uri, err)
	}
	priv, ok := k.(crypto.Signer)
	if !ok || !keys.KeyMatches(alg, priv.Public()) {
		return nil, fmt.Errorf("soft: key file %s: private key of type %T is not a %s key", uri, k, alg)
	}
	pub, err := x509.ParsePKIXPublicKey(env.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("soft: key file %s: parse public key: %w", uri, err)
	}
	if eq, ok := pub.(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(priv.Public()) {
		return nil, fmt.Errorf("soft: key file %s: recorded public key does not match the private key", uri)
	}
	return &signer{priv: priv}, nil
}

// Destroy overwrites the key file with random bytes, syncs it and removes
// it. A missing file is not an error.
func (pr *Provider) Destroy(ctx context.Context, uri string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	path, err := pr.path(uri)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("soft: destroy %s: %w", uri, err)
	}
	fi, err := f.Stat()
	if err == nil {
		_, err = io.CopyN(f, rand.Reader, fi.Size())
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("soft: destroy %s: overwrite: %w", uri, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("soft: destroy %s: %w", uri, err)
	}
	return syncDir(pr.dir)
}

// Close releases nothing: signers hold their keys in memory.
func (pr *Provider) Close() error { return nil }

func (pr *Provider) path(uri string) (string, error) {
	rel, ok := strings.CutPrefix(uri, Scheme+":")
	if !ok || rel == "" || !filepath.IsLocal(filepath.FromSlash(rel)) {
		return "", fmt.Errorf("soft: invalid key URI %q (want soft:<path inside the key directory>)", uri)
	}
	return filepath.Join(pr.dir, filepath.FromSlash(rel)), nil
}

// signer hides the private key: callers get Public and Sign only.
type signer struct {
	priv crypto.Signer
}

func (s *signer) Public() crypto.PublicKey { return s.priv.Public() }

// Sign signs digest (or, for Ed25519, the message). *rsa.PSSOptions select
// PSS; a PSSSaltLengthAuto request signs with salt = hash length.
func (s *signer) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return s.priv.Sign(r, digest, keys.SignerOpts(opts))
}

func generate(alg keys.Algorithm) (crypto.Signer, error) {
	switch alg {
	case keys.Ed25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	case keys.ECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case keys.ECDSAP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case keys.RSA2048, keys.RSA2048PSS:
		return rsa.GenerateKey(rand.Reader, 2048)
	case keys.RSA3072, keys.RSA3072PSS:
		return rsa.GenerateKey(rand.Reader, 3072)
	}
	return nil, fmt.Errorf("soft: %q: %w", alg, keys.ErrUnsupported)
}

// fileName turns a label into a safe, unique file name.
func fileName(label string) (string, error) {
	var b strings.Builder
	for _, r := range label {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
		if b.Len() >= 64 {
			break
		}
	}
	base := strings.Trim(b.String(), ".-")
	if base == "" {
		base = "key"
	}
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", err
	}
	return base + "-" + hex.EncodeToString(rnd[:]) + ".key", nil
}

// writeNew writes data to dir/name with mode 0600, durably, and fails if the
// name exists: the temporary file is hard-linked into place (link never
// replaces an existing name, unlike rename).
func writeNew(dir, name string, data []byte) error {
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("soft: write key file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("soft: write key file: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("soft: write key file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("soft: write key file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("soft: write key file: %w", err)
	}
	if err := os.Link(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("soft: write key file (never overwritten): %w", err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("soft: sync key directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("soft: sync key directory: %w", err)
	}
	return nil
}
