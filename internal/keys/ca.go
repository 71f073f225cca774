package keys

import (
	"context"
	"fmt"
	"time"

	"github.com/countersign/countersign/internal/pki"
)

// CreateCA generates the internal CA's key in the provider for scheme and
// self-signs its certificate (what `countersign init` does). Keep the URI
// and pki.EncodeChainPEM of the certificate to reopen it with OpenCA.
func CreateCA(ctx context.Context, r *Registry, scheme string, alg Algorithm, commonName string, now time.Time, validity time.Duration) (uri string, ca *CA, err error) {
	uri, _, err = r.Generate(ctx, scheme, alg, "countersign-ca")
	if err != nil {
		return "", nil, fmt.Errorf("keys: create CA key: %w", err)
	}
	s, err := r.Signer(ctx, uri)
	if err != nil {
		return "", nil, fmt.Errorf("keys: open CA key: %w", err)
	}
	cert, err := pki.NewCA(s, commonName, now, validity)
	if err != nil {
		return "", nil, err
	}
	return uri, &CA{Cert: cert, Signer: s}, nil
}

// OpenCA opens the CA key at uri and checks that it holds the key of the
// CA certificate in certPEM.
func OpenCA(ctx context.Context, r *Registry, uri, certPEM string) (*CA, error) {
	chain, err := pki.ParseChainPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("keys: CA certificate: %w", err)
	}
	if !chain[0].IsCA {
		return nil, fmt.Errorf("keys: certificate %q is not a CA", chain[0].Subject.CommonName)
	}
	s, err := r.Signer(ctx, uri)
	if err != nil {
		return nil, fmt.Errorf("keys: open CA key: %w", err)
	}
	if !samePublicKey(chain[0].PublicKey, s.Public()) {
		return nil, fmt.Errorf("%w: CA key %s does not match the CA certificate", ErrMismatch, uri)
	}
	return &CA{Cert: chain[0], Signer: s}, nil
}
