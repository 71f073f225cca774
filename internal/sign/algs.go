package sign

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"io"

	_ "crypto/sha256" // register SHA-256 for crypto.Hash.New
	_ "crypto/sha512" // register SHA-384 and SHA-512

	"github.com/countersign/countersign/internal/keys"
)

// Object identifiers of the algorithms this package emits (RFC 5754,
// RFC 4055, RFC 8410).
var (
	oidSHA256 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidSHA384 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}
	oidSHA512 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}

	oidECDSAWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidECDSAWithSHA384 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	oidECDSAWithSHA512 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}

	oidSHA256WithRSA = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	oidSHA384WithRSA = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 12}
	oidSHA512WithRSA = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 13}
	oidRSASSAPSS     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 10}
	oidMGF1          = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 8}

	oidEd25519 = asn1.ObjectIdentifier{1, 3, 101, 112}
)

// HashByName parses "sha256", "sha384" or "sha512" (the api.Digest names).
func HashByName(name string) (crypto.Hash, error) {
	switch name {
	case "sha256":
		return crypto.SHA256, nil
	case "sha384":
		return crypto.SHA384, nil
	case "sha512":
		return crypto.SHA512, nil
	}
	return 0, fmt.Errorf("%w: unknown digest algorithm %q (want sha256, sha384 or sha512)", ErrUnsupported, name)
}

// HashName is the inverse of HashByName; it returns "" for any other hash.
func HashName(h crypto.Hash) string {
	switch h {
	case crypto.SHA256:
		return "sha256"
	case crypto.SHA384:
		return "sha384"
	case crypto.SHA512:
		return "sha512"
	}
	return ""
}

func hashOID(h crypto.Hash) asn1.ObjectIdentifier {
	switch h {
	case crypto.SHA256:
		return oidSHA256
	case crypto.SHA384:
		return oidSHA384
	case crypto.SHA512:
		return oidSHA512
	}
	return nil
}

// hashByOID accepts only the three hashes this package signs with.
func hashByOID(oid asn1.ObjectIdentifier) (crypto.Hash, bool) {
	for _, h := range []crypto.Hash{crypto.SHA256, crypto.SHA384, crypto.SHA512} {
		if oid.Equal(hashOID(h)) {
			return h, true
		}
	}
	return 0, false
}

// hashAlgID is a digest AlgorithmIdentifier. RFC 5754 §2: parameters absent.
func hashAlgID(h crypto.Hash) pkix.AlgorithmIdentifier {
	return pkix.AlgorithmIdentifier{Algorithm: hashOID(h)}
}

// pssParameters is RSASSA-PSS-params (RFC 4055 §3.1).
type pssParameters struct {
	Hash         pkix.AlgorithmIdentifier `asn1:"explicit,tag:0"`
	MGF          pkix.AlgorithmIdentifier `asn1:"explicit,tag:1"`
	SaltLength   int                      `asn1:"explicit,tag:2"`
	TrailerField int                      `asn1:"optional,explicit,tag:3,default:1"`
}

// pssAlgID is id-RSASSA-PSS with explicit parameters: hash h, MGF1 with h,
// salt length = h.Size(), trailer field 1 (omitted as the DER default).
// The hash AlgorithmIdentifiers carry NULL parameters, as RFC 4055 examples
// and crypto/x509 do.
func pssAlgID(h crypto.Hash) (pkix.AlgorithmIdentifier, error) {
	hashID := pkix.AlgorithmIdentifier{Algorithm: hashOID(h), Parameters: asn1.NullRawValue}
	mgfParams, err := asn1.Marshal(hashID)
	if err != nil {
		return pkix.AlgorithmIdentifier{}, err
	}
	params, err := asn1.Marshal(pssParameters{
		Hash:         hashID,
		MGF:          pkix.AlgorithmIdentifier{Algorithm: oidMGF1, Parameters: asn1.RawValue{FullBytes: mgfParams}},
		SaltLength:   h.Size(),
		TrailerField: 1,
	})
	if err != nil {
		return pkix.AlgorithmIdentifier{}, err
	}
	return pkix.AlgorithmIdentifier{Algorithm: oidRSASSAPSS, Parameters: asn1.RawValue{FullBytes: params}}, nil
}

// signatureAlgID is the signature AlgorithmIdentifier for a key algorithm
// and digest, as CMS SignerInfo.signatureAlgorithm carries it.
func signatureAlgID(alg keys.Algorithm, h crypto.Hash) (pkix.AlgorithmIdentifier, error) {
	if hashOID(h) == nil {
		return pkix.AlgorithmIdentifier{}, fmt.Errorf("%w: digest %v", ErrUnsupported, h)
	}
	switch alg {
	case keys.ECDSAP256, keys.ECDSAP384:
		oid := map[crypto.Hash]asn1.ObjectIdentifier{crypto.SHA256: oidECDSAWithSHA256, crypto.SHA384: oidECDSAWithSHA384, crypto.SHA512: oidECDSAWithSHA512}[h]
		return pkix.AlgorithmIdentifier{Algorithm: oid}, nil // RFC 5758: parameters absent
	case keys.RSA2048, keys.RSA3072:
		oid := map[crypto.Hash]asn1.ObjectIdentifier{crypto.SHA256: oidSHA256WithRSA, crypto.SHA384: oidSHA384WithRSA, crypto.SHA512: oidSHA512WithRSA}[h]
		return pkix.AlgorithmIdentifier{Algorithm: oid, Parameters: asn1.NullRawValue}, nil // RFC 4055: NULL
	case keys.RSA2048PSS, keys.RSA3072PSS:
		return pssAlgID(h)
	case keys.Ed25519:
		if h != crypto.SHA512 {
			return pkix.AlgorithmIdentifier{}, fmt.Errorf("%w: ed25519 signs over sha512 only, not %s", ErrUnsupported, HashName(h))
		}
		return pkix.AlgorithmIdentifier{Algorithm: oidEd25519}, nil
	}
	return pkix.AlgorithmIdentifier{}, fmt.Errorf("%w: unknown key algorithm %q", ErrUnsupported, alg)
}

// checkKey reports whether pub is a key of algorithm alg.
func checkKey(pub crypto.PublicKey, alg keys.Algorithm) error {
	ok := false
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		ok = (alg == keys.ECDSAP256 && k.Curve == elliptic.P256()) || (alg == keys.ECDSAP384 && k.Curve == elliptic.P384())
	case *rsa.PublicKey:
		switch alg {
		case keys.RSA2048, keys.RSA2048PSS:
			ok = k.N.BitLen() == 2048
		case keys.RSA3072, keys.RSA3072PSS:
			ok = k.N.BitLen() == 3072
		}
	case ed25519.PublicKey:
		ok = alg == keys.Ed25519 && len(k) == ed25519.PublicKeySize
	}
	if !ok {
		return fmt.Errorf("%w: %T is not a %s key", ErrInput, pub, alg)
	}
	return nil
}

// signerOpts are the crypto.SignerOpts for signing a digest of hash h with
// alg. PSS always uses salt = hash length: the value that HSMs (crypto11)
// accept and that other JOSE/CMS implementations expect.
func signerOpts(alg keys.Algorithm, h crypto.Hash) crypto.SignerOpts {
	if alg.PSS() {
		return &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: h}
	}
	if alg == keys.Ed25519 {
		return &ed25519.Options{Hash: crypto.SHA512} // Ed25519ph
	}
	return h
}

// signDigest signs digest (of hash h) with s. For Ed25519 it makes an
// Ed25519ph signature.
func signDigest(s crypto.Signer, alg keys.Algorithm, h crypto.Hash, digest []byte) ([]byte, error) {
	if alg == keys.Ed25519 && h != crypto.SHA512 {
		return nil, fmt.Errorf("%w: ed25519 signs over sha512 only, not %s", ErrUnsupported, HashName(h))
	}
	sig, err := s.Sign(rand.Reader, digest, signerOpts(alg, h))
	if err != nil {
		return nil, fmt.Errorf("sign: %s signer: %w", alg, err)
	}
	return sig, nil
}

// verifyDigest checks sig over digest with the exact parameters signDigest
// uses. It returns false, never an error, for a wrong signature.
func verifyDigest(pub crypto.PublicKey, alg keys.Algorithm, h crypto.Hash, digest, sig []byte) bool {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(k, digest, sig)
	case *rsa.PublicKey:
		if alg.PSS() {
			return rsa.VerifyPSS(k, h, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: h}) == nil
		}
		return rsa.VerifyPKCS1v15(k, h, digest, sig) == nil
	case ed25519.PublicKey:
		return ed25519.VerifyWithOptions(k, digest, sig, &ed25519.Options{Hash: crypto.SHA512}) == nil
	}
	return false
}

// hashOf digests data with h.
func hashOf(h crypto.Hash, data []byte) []byte {
	w := h.New()
	w.Write(data)
	return w.Sum(nil)
}

// pssSaltSigner forces PSSSaltLengthEqualsHash on every PSS request. go-jose's
// cryptosigner asks for PSSSaltLengthAuto, which in-memory keys turn into the
// maximum salt (rejected by other JOSE implementations) and crypto11 refuses.
type pssSaltSigner struct{ crypto.Signer }

func (s pssSaltSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if o, ok := opts.(*rsa.PSSOptions); ok {
		fixed := *o
		fixed.SaltLength = rsa.PSSSaltLengthEqualsHash
		opts = &fixed
	}
	return s.Signer.Sign(r, digest, opts)
}
