// Package keys names the signing algorithms Countersign supports and chooses
// a key provider by URI. Every provider returns a crypto.Signer; format code
// never knows which provider holds a key, and private key material never
// leaves its provider (no method here returns it).
package keys

import (
	"context"
	"crypto"
	"errors"
	"fmt"
)

// Algorithm is a signing key algorithm.
type Algorithm string

const (
	Ed25519   Algorithm = "ed25519"
	ECDSAP256 Algorithm = "ecdsa-p256"
	ECDSAP384 Algorithm = "ecdsa-p384"
	RSA2048   Algorithm = "rsa-2048"
	RSA3072   Algorithm = "rsa-3072"
	// RSA-PSS variants sign with PSS (salt = hash length); same key types.
	RSA2048PSS Algorithm = "rsa-2048-pss"
	RSA3072PSS Algorithm = "rsa-3072-pss"
)

// Algorithms lists every supported algorithm.
var Algorithms = []Algorithm{Ed25519, ECDSAP256, ECDSAP384, RSA2048, RSA3072, RSA2048PSS, RSA3072PSS}

// ParseAlgorithm validates a name.
func ParseAlgorithm(s string) (Algorithm, error) {
	for _, a := range Algorithms {
		if string(a) == s {
			return a, nil
		}
	}
	return "", fmt.Errorf("keys: unknown algorithm %q (want one of ed25519, ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-2048-pss, rsa-3072-pss)", s)
}

// Hash is the digest algorithm an algorithm signs with by default.
func (a Algorithm) Hash() crypto.Hash {
	switch a {
	case ECDSAP384:
		return crypto.SHA384
	case Ed25519:
		return crypto.SHA512
	default:
		return crypto.SHA256
	}
}

// PSS reports whether the algorithm signs with RSASSA-PSS.
func (a Algorithm) PSS() bool { return a == RSA2048PSS || a == RSA3072PSS }

var (
	// ErrUnsupported is returned by a provider that cannot do an algorithm.
	ErrUnsupported = errors.New("keys: algorithm not supported by provider")
	// ErrNotBuilt is returned for a provider compiled out of this binary.
	ErrNotBuilt = errors.New("keys: provider not built into this binary")
)

// Provider creates keys and opens signers. Implementations: soft (encrypted
// key files) and pkcs11 (HSM via crypto11).
type Provider interface {
	// Generate makes a new key inside the provider and returns its URI and
	// public key. label is a human hint (tenant/name/version).
	Generate(ctx context.Context, alg Algorithm, label string) (uri string, pub crypto.PublicKey, err error)
	// Signer opens the key at uri. The signer's Sign follows crypto.Signer
	// conventions (digest in, opts carrying the hash or *rsa.PSSOptions).
	Signer(ctx context.Context, uri string) (crypto.Signer, error)
	// Close releases provider resources (sessions, handles).
	Close() error
}
