package evidence

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

// ErrKey is returned for a lead key of an unsupported type.
var ErrKey = errors.New("evidence: the incident lead's key must be ECDSA P-256 or Ed25519")

// leadKey signs and verifies DSSE envelopes: ECDSA P-256 over SHA-256
// (ASN.1 DER signatures) or Ed25519 over the PAE bytes.
type leadKey struct {
	signer crypto.Signer // nil for verify-only
	pub    crypto.PublicKey
	id     string
}

var _ dsse.SignerVerifier = (*leadKey)(nil)

func newLeadKey(s crypto.Signer, pub crypto.PublicKey) (*leadKey, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve.Params().Name != "P-256" {
			return nil, fmt.Errorf("%w: ECDSA curve %s", ErrKey, k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	default:
		return nil, fmt.Errorf("%w: got %T", ErrKey, pub)
	}
	id, err := KeyID(pub)
	if err != nil {
		return nil, err
	}
	return &leadKey{signer: s, pub: pub, id: id}, nil
}

// KeyID is the DSSE key ID of a lead key: "SHA256:" and the base64 SHA-256
// of its SSH wire encoding, as ssh-keygen -l prints it.
func KeyID(pub crypto.PublicKey) (string, error) {
	id, err := dsse.SHA256KeyID(pub)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrKey, err)
	}
	return id, nil
}

func (k *leadKey) KeyID() (string, error)   { return k.id, nil }
func (k *leadKey) Public() crypto.PublicKey { return k.pub }

func (k *leadKey) Sign(_ context.Context, data []byte) ([]byte, error) {
	if k.signer == nil {
		return nil, errors.New("evidence: verify-only key")
	}
	if _, ok := k.pub.(ed25519.PublicKey); ok {
		return k.signer.Sign(rand.Reader, data, crypto.Hash(0))
	}
	d := sha256.Sum256(data)
	return k.signer.Sign(rand.Reader, d[:], crypto.SHA256)
}

func (k *leadKey) Verify(_ context.Context, data, sig []byte) error {
	switch p := k.pub.(type) {
	case ed25519.PublicKey:
		if ed25519.Verify(p, data, sig) {
			return nil
		}
	case *ecdsa.PublicKey:
		d := sha256.Sum256(data)
		if ecdsa.VerifyASN1(p, d[:], sig) {
			return nil
		}
	}
	return errors.New("evidence: DSSE signature does not verify")
}
