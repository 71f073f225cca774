package sign

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"

	"github.com/countersign/countersign/internal/keys"
)

func signRaw(k Key, h crypto.Hash, digest []byte) (Result, error) {
	id, err := signatureAlgID(k.Algorithm, h)
	if err != nil {
		return Result{}, err
	}
	sig, err := signDigest(k.Signer, k.Algorithm, h, digest)
	if err != nil {
		return Result{}, err
	}
	return Result{Artifact: sig, AlgorithmOID: id.Algorithm.String()}, nil
}

// verifyRaw checks a bare signature. A raw signature names no algorithm, so
// when it does not verify as expected it is tried under the neighbouring
// interpretations (PKCS#1 v1.5 vs PSS, another PSS salt length, another
// digest of the document, pure Ed25519 vs Ed25519ph): if one of them
// verifies, the signature is genuine but made with other parameters, and
// the result is an *AlgorithmMismatchError rather than ErrInvalidSignature.
func verifyRaw(sig []byte, in Input, h crypto.Hash, digest []byte, pub crypto.PublicKey, alg keys.Algorithm) error {
	if _, err := signatureAlgID(alg, h); err != nil {
		return err
	}
	if len(sig) == 0 {
		return malformed("raw", "empty signature", nil)
	}
	if verifyDigest(pub, alg, h, digest, sig) {
		return nil
	}
	if got, field := classifyRaw(sig, in, h, digest, pub, alg); got != "" {
		return &AlgorithmMismatchError{Format: "raw", Field: field, Want: describe(alg, h), Got: got}
	}
	return ErrInvalidSignature
}

// classifyRaw returns a description of the parameters a genuine signature
// was made with, or "" if it matches none.
func classifyRaw(sig []byte, in Input, h crypto.Hash, digest []byte, pub crypto.PublicKey, alg keys.Algorithm) (got, field string) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if alg.PSS() {
			if rsa.VerifyPKCS1v15(k, h, digest, sig) == nil {
				return "rsa-pkcs1v15/" + HashName(h), "signature"
			}
			if rsa.VerifyPSS(k, h, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: h}) == nil {
				return "rsa-pss/" + HashName(h) + " with another salt length", "pss-salt"
			}
		} else if rsa.VerifyPSS(k, h, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: h}) == nil {
			return "rsa-pss/" + HashName(h), "signature"
		}
	case ed25519.PublicKey:
		if in.Digest == nil && ed25519.Verify(k, in.Document, sig) {
			return "pure ed25519 over the document", "signature"
		}
		return "", ""
	case *ecdsa.PublicKey:
	default:
		return "", ""
	}
	if in.Digest != nil {
		return "", ""
	}
	for _, other := range []crypto.Hash{crypto.SHA256, crypto.SHA384, crypto.SHA512} {
		if other != h && verifyDigest(pub, alg, other, hashOf(other, in.Document), sig) {
			return describe(alg, other), "digest"
		}
	}
	return "", ""
}

func describe(alg keys.Algorithm, h crypto.Hash) string {
	return string(alg) + "/" + HashName(h)
}
