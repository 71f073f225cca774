// Package sign produces and verifies Countersign's three signature formats:
// CMS (RFC 5652 detached SignedData with signed attributes and the
// certificate chain), JWS (RFC 7515 detached compact serialization with the
// RFC 7797 unencoded payload, b64=false) and raw (the bare signature over the
// document digest).
//
// Invariant: every artifact is made over the digest algorithm the caller
// asked for (or the key algorithm's default), never a library default, and
// Verify checks an artifact against the public key and the algorithm and
// digest the caller expects, independently of the code that signed it. A
// cryptographically valid signature whose algorithm, digest or parameters
// differ from the expected ones is reported as an *AlgorithmMismatchError
// (errors.Is ErrAlgorithmMismatch), never as valid and never as
// ErrInvalidSignature, so drift detection can tell "metadata drift" from
// "invalid". Format code only sees a crypto.Signer: it never knows whether the
// key lives in memory, in a key file or in an HSM.
//
// Algorithms per format (hash = Input.Hash, or the key algorithm's default):
//
//	key algorithm     cms / raw signature algorithm          jws alg
//	ecdsa-p256/p384   ecdsa-with-SHA256/384/512 (ASN.1 DER)   ES256 (p256+sha256), ES384 (p384+sha384)
//	rsa-2048/3072     sha256/384/512WithRSAEncryption         RS256/RS384/RS512
//	rsa-*-pss         id-RSASSA-PSS, MGF1 with the same hash, PS256/PS384/PS512
//	                  salt length = hash length, trailer 1
//	ed25519           CMS: id-Ed25519 over the signed         EdDSA over the document
//	                  attributes (RFC 8419, sha512 only);
//	                  raw: Ed25519ph (RFC 8032) over the
//	                  SHA-512 digest
//
// Raw Ed25519 is Ed25519ph so that a digest-only request can be signed: the
// signature is over SHA-512(document) with the RFC 8032 "SigEd25519 no
// Ed25519 collisions" prefix, and verifies with ed25519.VerifyWithOptions
// and Options{Hash: crypto.SHA512}. X.509 defines no OID for Ed25519ph, so
// its Result.AlgorithmOID is id-Ed25519 (1.3.101.112) with digest OID sha512.
//
// CMS accepts a digest instead of the document (the message-digest attribute
// is that digest). JWS needs the document and returns ErrDigestOnly otherwise.
package sign
