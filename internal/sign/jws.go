package sign

import (
	"crypto"
	"crypto/rsa"
	"fmt"
	"strings"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/cryptosigner"

	"github.com/countersign/countersign/internal/keys"
)

// parseAlgs are the JWS algorithms ParseDetached accepts, wider than what
// we sign with, so that an artifact with an unexpected "alg" is reported as
// an algorithm mismatch instead of a parse error.
var parseAlgs = []jose.SignatureAlgorithm{
	jose.ES256, jose.ES384, jose.ES512, jose.EdDSA,
	jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
	jose.HS256, jose.HS384, jose.HS512,
}

// jwsAlg is the JWS "alg" for a key algorithm and digest.
func jwsAlg(alg keys.Algorithm, h crypto.Hash) (jose.SignatureAlgorithm, error) {
	var a jose.SignatureAlgorithm
	switch {
	case alg == keys.ECDSAP256 && h == crypto.SHA256:
		a = jose.ES256
	case alg == keys.ECDSAP384 && h == crypto.SHA384:
		a = jose.ES384
	case alg == keys.Ed25519 && h == crypto.SHA512:
		a = jose.EdDSA
	case alg == keys.RSA2048 || alg == keys.RSA3072:
		a = map[crypto.Hash]jose.SignatureAlgorithm{crypto.SHA256: jose.RS256, crypto.SHA384: jose.RS384, crypto.SHA512: jose.RS512}[h]
	case alg.PSS():
		a = map[crypto.Hash]jose.SignatureAlgorithm{crypto.SHA256: jose.PS256, crypto.SHA384: jose.PS384, crypto.SHA512: jose.PS512}[h]
	}
	if a == "" {
		return "", fmt.Errorf("%w: jws has no algorithm for %s with %s", ErrUnsupported, alg, HashName(h))
	}
	return a, nil
}

func signJWS(k Key, in Input, h crypto.Hash) (Result, error) {
	if in.Digest != nil {
		return Result{}, fmt.Errorf("%w: jws", ErrDigestOnly)
	}
	ja, err := jwsAlg(k.Algorithm, h)
	if err != nil {
		return Result{}, err
	}
	id, err := signatureAlgID(k.Algorithm, h)
	if err != nil {
		return Result{}, err
	}
	s := k.Signer
	if k.Algorithm.PSS() {
		s = pssSaltSigner{s}
	}
	opts := (&jose.SignerOptions{}).WithBase64(false)
	if k.KeyID != "" {
		opts = opts.WithHeader(jose.HeaderKey("kid"), k.KeyID)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: ja, Key: cryptosigner.Opaque(s)}, opts)
	if err != nil {
		return Result{}, fmt.Errorf("sign: jws signer: %w", err)
	}
	obj, err := signer.Sign(in.Document)
	if err != nil {
		return Result{}, fmt.Errorf("sign: jws %s signer: %w", k.Algorithm, err)
	}
	compact, err := obj.DetachedCompactSerialize()
	if err != nil {
		return Result{}, fmt.Errorf("sign: jws serialize: %w", err)
	}
	return Result{Artifact: []byte(compact), AlgorithmOID: id.Algorithm.String()}, nil
}

func verifyJWS(artifact []byte, in Input, h crypto.Hash, pub crypto.PublicKey, alg keys.Algorithm) error {
	if in.Digest != nil {
		return fmt.Errorf("%w: jws", ErrDigestOnly)
	}
	want, err := jwsAlg(alg, h)
	if err != nil {
		return err
	}
	compact := string(artifact)
	parts := strings.Split(compact, ".")
	if len(parts) != 3 || parts[0] == "" || parts[1] != "" || parts[2] == "" {
		return malformed("jws", "not a detached compact JWS (header..signature)", nil)
	}
	doc := in.Document
	if doc == nil {
		doc = []byte{} // ParseDetached needs a non-nil payload to treat it as detached
	}
	obj, err := jose.ParseDetached(compact, doc, parseAlgs)
	if err != nil {
		return malformed("jws", "parse", err)
	}
	if len(obj.Signatures) != 1 {
		return malformed("jws", "want exactly one signature", nil)
	}
	sig := obj.Signatures[0]
	got := jose.SignatureAlgorithm(sig.Protected.Algorithm)
	// Verify under the algorithm the header declares first: a genuine
	// signature with another algorithm is drift, not forgery.
	if _, err := obj.Verify(pub); err != nil {
		return fmt.Errorf("%w: jws %s: %v", ErrInvalidSignature, got, err)
	}
	if got != want {
		return &AlgorithmMismatchError{Format: "jws", Field: "signature", Want: string(want), Got: string(got)}
	}
	if b64, ok := sig.Protected.ExtraHeaders["b64"]; !ok || b64 != false {
		return &AlgorithmMismatchError{Format: "jws", Field: "b64", Want: "false", Got: fmt.Sprint(b64)}
	}
	if alg.PSS() {
		// go-jose verifies PSS with any salt length; we sign with salt =
		// hash length, which other JOSE implementations require.
		k, ok := pub.(*rsa.PublicKey)
		input := append([]byte(parts[0]+"."), in.Document...)
		if !ok || rsa.VerifyPSS(k, h, hashOf(h, input), sig.Signature, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: h}) != nil {
			return &AlgorithmMismatchError{Format: "jws", Field: "pss-salt", Want: fmt.Sprint(h.Size()), Got: "another salt length"}
		}
	}
	return nil
}
