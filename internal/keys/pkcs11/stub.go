//go:build !cgo

package pkcs11

import (
	"context"
	"crypto"
	"fmt"

	"github.com/countersign/countersign/internal/keys"
)

// Provider is unavailable in a binary built without cgo.
type Provider struct{}

// New reports that PKCS#11 support is not built in.
func New(cfg Config) (*Provider, error) {
	return nil, fmt.Errorf("pkcs11: built without PKCS#11 support (cgo disabled): %w", keys.ErrNotBuilt)
}

// Generate is never reached: New fails.
func (*Provider) Generate(context.Context, keys.Algorithm, string) (string, crypto.PublicKey, error) {
	return "", nil, keys.ErrNotBuilt
}

// Signer is never reached: New fails.
func (*Provider) Signer(context.Context, string) (crypto.Signer, error) { return nil, keys.ErrNotBuilt }

// Destroy is never reached: New fails.
func (*Provider) Destroy(context.Context, string) error { return keys.ErrNotBuilt }

// Close does nothing.
func (*Provider) Close() error { return nil }
