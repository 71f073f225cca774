package sign

import (
	"errors"
	"fmt"
)

var (
	// ErrInvalidSignature means the artifact does not verify: the document or
	// digest differs, the signature bytes were changed, or another key signed.
	ErrInvalidSignature = errors.New("sign: invalid signature")
	// ErrAlgorithmMismatch means the artifact names (or was made with) a
	// signature algorithm, digest algorithm or parameter other than the
	// expected one. Errors carrying it are *AlgorithmMismatchError.
	ErrAlgorithmMismatch = errors.New("sign: algorithm mismatch")
	// ErrMalformed means the artifact cannot be parsed as the format claims.
	ErrMalformed = errors.New("sign: malformed signature artifact")
	// ErrUntrusted means a CMS signer certificate does not chain to
	// VerifyKey.Roots at the signing time.
	ErrUntrusted = errors.New("sign: signer certificate not trusted")
	// ErrDigestOnly means the format needs the document itself and only a
	// digest was given (JWS). The node maps it to 422.
	ErrDigestOnly = errors.New("sign: format needs the document, not only its digest")
	// ErrUnsupported means the format cannot express this combination of key
	// algorithm and digest algorithm (for example ES256 with SHA-512, or
	// Ed25519 in CMS with a digest other than SHA-512).
	ErrUnsupported = errors.New("sign: unsupported algorithm combination")
	// ErrInput means the caller's request is inconsistent: both or neither of
	// document and digest, a digest of the wrong length, a key that does not
	// match its algorithm or certificate, a missing chain.
	ErrInput = errors.New("sign: invalid input")
)

// AlgorithmMismatchError reports which algorithm field of an artifact differs
// from the expected one. errors.Is(err, ErrAlgorithmMismatch) holds for it.
type AlgorithmMismatchError struct {
	Format string // "cms", "jws" or "raw"
	Field  string // "signature", "digest", "pss-parameters", "pss-salt", "b64"
	Want   string
	Got    string
}

func (e *AlgorithmMismatchError) Error() string {
	return fmt.Sprintf("sign: %s %s algorithm mismatch: want %s, got %s", e.Format, e.Field, e.Want, e.Got)
}

// Is makes errors.Is(err, ErrAlgorithmMismatch) true.
func (e *AlgorithmMismatchError) Is(target error) bool { return target == ErrAlgorithmMismatch }

func malformed(format, msg string, err error) error {
	if err != nil {
		return fmt.Errorf("%w: %s: %s: %v", ErrMalformed, format, msg, err)
	}
	return fmt.Errorf("%w: %s: %s", ErrMalformed, format, msg)
}
