// Package api holds the wire types of the Countersign HTTP API and its
// RFC 9457 problem+json errors. Server and client both use it, so the
// contract lives in one place: docs/api.md and docs/openapi.yaml describe
// exactly these types.
package api

import "time"

// Format names a signature container.
type Format string

const (
	FormatCMS Format = "cms" // RFC 5652 detached SignedData, DER
	FormatJWS Format = "jws" // RFC 7515 detached compact JWS (RFC 7797 b64=false)
	FormatRaw Format = "raw" // the bare signature over the digest
)

// Digest is a pre-computed document digest, for clients that do not send the document.
type Digest struct {
	Alg   string `json:"alg"`   // "sha256" | "sha384" | "sha512"
	Value []byte `json:"value"` // base64 on the wire
}

// SignRequest is the body of POST /v1/sign. Exactly one of Document or Digest is set.
type SignRequest struct {
	Key        string  `json:"key"`
	Format     Format  `json:"format"`
	Document   []byte  `json:"document,omitempty"`
	Digest     *Digest `json:"digest,omitempty"`
	DocumentID string  `json:"document_id,omitempty"`
}

// SignResponse is the body of a successful sign. Replays of the same
// Idempotency-Key return it byte for byte.
type SignResponse struct {
	ID              string    `json:"id"`
	Format          Format    `json:"format"`
	Signature       string    `json:"signature"` // base64 DER (cms), compact detached JWS (jws), base64 (raw)
	Key             string    `json:"key"`
	KeyVersion      int       `json:"key_version"`
	Algorithm       string    `json:"algorithm"`        // e.g. "ecdsa-p256"
	AlgorithmOID    string    `json:"algorithm_oid"`    // signature algorithm OID
	DigestAlgorithm string    `json:"digest_algorithm"` // "sha256" ...
	DigestOID       string    `json:"digest_oid"`
	DocumentDigest  string    `json:"document_digest"` // base64 of the digest that was signed over
	DocumentID      string    `json:"document_id,omitempty"`
	Release         string    `json:"release"`
	Instance        string    `json:"instance"`
	AuditIndex      int64     `json:"audit_index"`
	SignedAt        time.Time `json:"signed_at"`
}

// VerifyRequest is the body of POST /v1/verify. Signature is in the same
// encoding SignResponse.Signature uses.
type VerifyRequest struct {
	Key        string  `json:"key"`
	KeyVersion int     `json:"key_version,omitempty"` // 0: try every version of the key
	Format     Format  `json:"format"`
	Signature  string  `json:"signature"`
	Document   []byte  `json:"document,omitempty"`
	Digest     *Digest `json:"digest,omitempty"`
}

// VerifyResponse is the answer of POST /v1/verify.
type VerifyResponse struct {
	Valid      bool   `json:"valid"`
	Reason     string `json:"reason,omitempty"`
	Key        string `json:"key"`
	KeyVersion int    `json:"key_version,omitempty"`
	Algorithm  string `json:"algorithm,omitempty"`
}

// KeyVersion describes one version of a signing key.
type KeyVersion struct {
	Version      int       `json:"version"`
	Algorithm    string    `json:"algorithm"`
	State        string    `json:"state"` // enabled | disabled | destroyed
	PublicKeyPEM string    `json:"public_key_pem"`
	CertChainPEM string    `json:"cert_chain_pem,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
}

// Key is the body of GET /v1/keys/{name}.
type Key struct {
	Name           string       `json:"name"`
	CurrentVersion int          `json:"current_version"`
	Versions       []KeyVersion `json:"versions"`
}

// KeyList is the body of GET /v1/keys.
type KeyList struct {
	Keys []Key `json:"keys"`
}

// BatchSignRequest is the body of POST /v1/sign:batch. Each item carries its
// own idempotency key; items are independent.
type BatchSignRequest struct {
	Items []BatchSignItem `json:"items"`
}

// BatchSignItem is one item of a batch.
type BatchSignItem struct {
	IdempotencyKey string `json:"idempotency_key"`
	SignRequest
}

// BatchSignResponse carries one result per item, in request order.
type BatchSignResponse struct {
	Results []BatchSignResult `json:"results"`
}

// BatchSignResult is either a signature or a problem.
type BatchSignResult struct {
	Status    int           `json:"status"`
	Signature *SignResponse `json:"signature,omitempty"`
	Problem   *Problem      `json:"problem,omitempty"`
}

// MaxBatchItems bounds POST /v1/sign:batch.
const MaxBatchItems = 1000
