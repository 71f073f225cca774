package sign

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/keys"
)

// Input is what is signed or verified: exactly one of Document and Digest.
// A non-nil Digest selects digest mode; otherwise Document (possibly empty)
// is the document. Hash is the digest algorithm; 0 means the key algorithm's
// default (keys.Algorithm.Hash()).
type Input struct {
	Document []byte
	Digest   []byte
	Hash     crypto.Hash
}

// Key is a signing key as the format code sees it.
type Key struct {
	Signer    crypto.Signer
	Algorithm keys.Algorithm
	// Chain is the certificate chain, leaf first. Required for CMS: the leaf
	// identifies the signer and must hold Signer's public key.
	Chain []*x509.Certificate
	// KeyID goes into the JWS "kid" header when not empty.
	KeyID string
}

// Result is a signature artifact and the metadata the node stamps on it.
type Result struct {
	// Artifact is DER (cms), the ASCII compact detached JWS "header..sig"
	// (jws), or the signature bytes (raw).
	Artifact []byte
	// AlgorithmOID is the dotted OID of the signature algorithm
	// (e.g. 1.2.840.10045.4.3.2); DigestOID that of the digest algorithm.
	AlgorithmOID string
	DigestOID    string
	// Digest is the document digest that was signed over (the
	// message-digest attribute for CMS).
	Digest []byte
	Hash   crypto.Hash
}

// VerifyKey is what an artifact is verified against.
type VerifyKey struct {
	// Public is the expected public key. When nil, Chain[0]'s key is used.
	Public    crypto.PublicKey
	Algorithm keys.Algorithm
	// Chain is the key's certificate chain, leaf first (optional). Its
	// non-leaf certificates serve as intermediates for Roots.
	Chain []*x509.Certificate
	// Roots, if set, makes CMS verification require the signer certificate
	// to chain to one of them at the signing time.
	Roots *x509.CertPool
}

// Sign makes an artifact of format over in with k. signingTime is the CMS
// signing-time attribute (truncated to seconds, UTC); the other formats do
// not carry a time. It must not be zero.
func Sign(format api.Format, k Key, in Input, signingTime time.Time) (Result, error) {
	if k.Signer == nil {
		return Result{}, fmt.Errorf("%w: no signer", ErrInput)
	}
	if err := checkKey(k.Signer.Public(), k.Algorithm); err != nil {
		return Result{}, err
	}
	h, digest, err := resolve(in, k.Algorithm)
	if err != nil {
		return Result{}, err
	}
	var res Result
	switch format {
	case api.FormatCMS:
		res, err = signCMS(k, h, digest, signingTime)
	case api.FormatJWS:
		res, err = signJWS(k, in, h)
	case api.FormatRaw:
		res, err = signRaw(k, h, digest)
	default:
		return Result{}, fmt.Errorf("%w: unknown format %q", ErrUnsupported, format)
	}
	if err != nil {
		return Result{}, err
	}
	res.Digest, res.Hash, res.DigestOID = digest, h, hashOID(h).String()
	return res, nil
}

// Verify checks artifact (in the encoding Result.Artifact has) over in
// against vk. It returns nil only if the artifact is a valid signature by
// vk's key with exactly the algorithm and digest that vk.Algorithm and
// in.Hash imply. Errors: ErrMalformed, ErrInvalidSignature,
// *AlgorithmMismatchError (ErrAlgorithmMismatch), ErrUntrusted,
// ErrDigestOnly, ErrUnsupported, ErrInput.
func Verify(format api.Format, artifact []byte, in Input, vk VerifyKey) error {
	h, digest, err := resolve(in, vk.Algorithm)
	if err != nil {
		return err
	}
	pub := vk.Public
	if pub == nil && len(vk.Chain) > 0 && vk.Chain[0] != nil {
		pub = vk.Chain[0].PublicKey
	}
	if pub != nil {
		if err := checkKey(pub, vk.Algorithm); err != nil {
			return err
		}
	}
	switch format {
	case api.FormatCMS:
		if pub == nil && vk.Roots == nil {
			return fmt.Errorf("%w: cms verification needs a public key, a chain or roots", ErrInput)
		}
		return verifyCMS(artifact, in, h, digest, pub, vk)
	case api.FormatJWS:
		if pub == nil {
			return fmt.Errorf("%w: jws verification needs a public key", ErrInput)
		}
		return verifyJWS(artifact, in, h, pub, vk.Algorithm)
	case api.FormatRaw:
		if pub == nil {
			return fmt.Errorf("%w: raw verification needs a public key", ErrInput)
		}
		return verifyRaw(artifact, in, h, digest, pub, vk.Algorithm)
	}
	return fmt.Errorf("%w: unknown format %q", ErrUnsupported, format)
}

// resolve picks the hash and computes (or checks) the digest.
func resolve(in Input, alg keys.Algorithm) (crypto.Hash, []byte, error) {
	if _, err := keys.ParseAlgorithm(string(alg)); err != nil {
		return 0, nil, fmt.Errorf("%w: %v", ErrUnsupported, err)
	}
	h := in.Hash
	if h == 0 {
		h = alg.Hash()
	}
	if hashOID(h) == nil {
		return 0, nil, fmt.Errorf("%w: digest algorithm %v (want sha256, sha384 or sha512)", ErrUnsupported, h)
	}
	if in.Digest != nil {
		if in.Document != nil {
			return 0, nil, fmt.Errorf("%w: both document and digest given", ErrInput)
		}
		if len(in.Digest) != h.Size() {
			return 0, nil, fmt.Errorf("%w: %s digest is %d bytes, want %d", ErrInput, HashName(h), len(in.Digest), h.Size())
		}
		return h, in.Digest, nil
	}
	return h, hashOf(h, in.Document), nil
}
