package pki

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// ErrNoPEM is returned when input holds no PEM block of the expected type.
var ErrNoPEM = errors.New("pki: no PEM data")

// EncodeChainPEM encodes certificates (leaf first) as concatenated
// CERTIFICATE blocks.
func EncodeChainPEM(chain []*x509.Certificate) string {
	var b bytes.Buffer
	for _, c := range chain {
		// pem.Encode only fails on headers with invalid keys; there are none.
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.String()
}

// ParseChainPEM parses concatenated CERTIFICATE blocks in order. Text
// between blocks is ignored; any other block type is an error.
func ParseChainPEM(s string) ([]*x509.Certificate, error) {
	rest := []byte(s)
	var chain []*x509.Certificate
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("pki: certificate chain: unexpected PEM block %q", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("pki: certificate %d of chain: %w", len(chain), err)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("%w: no CERTIFICATE block in chain", ErrNoPEM)
	}
	return chain, nil
}

// VerifyChainOrder checks that each certificate is signed by the next one
// (leaf first). The last certificate is not checked against any root: trust
// is the verifier's decision.
func VerifyChainOrder(chain []*x509.Certificate) error {
	for i := 0; i+1 < len(chain); i++ {
		if err := chain[i].CheckSignatureFrom(chain[i+1]); err != nil {
			return fmt.Errorf("pki: certificate %d (%q) is not signed by certificate %d (%q): %w",
				i, chain[i].Subject.CommonName, i+1, chain[i+1].Subject.CommonName, err)
		}
	}
	return nil
}

// PublicKeyPEM encodes pub as a PUBLIC KEY (SubjectPublicKeyInfo) block.
func PublicKeyPEM(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("pki: marshal public key: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), nil
}

// ParsePublicKeyPEM parses the first PUBLIC KEY block of s.
func ParsePublicKeyPEM(s string) (crypto.PublicKey, error) {
	rest := []byte(s)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, fmt.Errorf("%w: no PUBLIC KEY block", ErrNoPEM)
		}
		if block.Type != "PUBLIC KEY" {
			continue
		}
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("pki: parse public key: %w", err)
		}
		return pub, nil
	}
}
