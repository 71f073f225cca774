package probe

import (
	"bytes"
	"crypto"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/node"
	"github.com/countersign/countersign/internal/sign"
	"github.com/countersign/countersign/internal/store"
)

// Kind classifies one probe result.
type Kind string

const (
	// KindOK: the signature verified against the pinned key and every
	// metadata field matched the policy.
	KindOK Kind = "ok"
	// KindInvalid: the artifact does not verify against the pinned key
	// (changed bytes, another key, unparsable, untrusted chain). Never
	// transient.
	KindInvalid Kind = "invalid"
	// KindDrift: a genuine signature, or a key, whose metadata differs
	// from the policy or the pinned trust set (algorithm, digest, OIDs, key
	// version, release).
	KindDrift Kind = "drift"
	// KindUnavailable: no answer, a timeout, or a 5xx/429.
	KindUnavailable Kind = "unavailable"
	// KindError: the node answered but not with a usable signature (4xx,
	// an undecodable body), or the check itself could not run.
	KindError Kind = "error"
)

// Kinds lists every kind, for metrics.
var Kinds = []Kind{KindOK, KindInvalid, KindDrift, KindUnavailable, KindError}

// bad reports whether k is evidence of corruption.
func (k Kind) bad() bool { return k == KindInvalid || k == KindDrift }

// failed reports whether k counts against availability.
func (k Kind) failed() bool { return k == KindUnavailable || k == KindError }

// Finding is the result of one probe (or one passive check).
type Finding struct {
	Time        time.Time     `json:"time"` // when the result was observed
	Round       uint64        `json:"round,omitempty"`
	Pool        string        `json:"pool"`
	Endpoint    string        `json:"endpoint,omitempty"`
	Release     string        `json:"release,omitempty"`
	Instance    string        `json:"instance,omitempty"`
	Key         string        `json:"key,omitempty"`
	KeyVersion  int           `json:"key_version,omitempty"`
	Format      api.Format    `json:"format,omitempty"`
	Kind        Kind          `json:"kind"`
	Detail      string        `json:"detail,omitempty"`
	SignatureID string        `json:"signature_id,omitempty"`
	Latency     time.Duration `json:"latency,omitempty"`
}

// LogValue keeps log lines short and structured.
func (f Finding) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("pool", f.Pool), slog.String("endpoint", f.Endpoint), slog.String("release", f.Release),
		slog.String("format", string(f.Format)), slog.String("kind", string(f.Kind)),
		slog.String("detail", f.Detail), slog.String("signature_id", f.SignatureID))
}

// Checker verifies signatures independently of the node that made them:
// against the pinned TrustSet and the Policy, never against anything the
// node says about its own key.
type Checker struct {
	Policy *Policy
	Trust  *TrustSet
	// Tenant is the tenant of the keys CheckSignature looks up (the
	// probe's own tenant, usually "").
	Tenant string
	// Now stamps findings; nil means time.Now.
	Now func() time.Time
}

func (c *Checker) now() time.Time {
	if c.Now == nil {
		return time.Now()
	}
	return c.Now()
}

// CheckSignature verifies one signature answered by a node, e.g. a sample
// of real traffic. artifact is the decoded artifact (nil: decode
// resp.Signature). doc is the document; when nil the check runs over
// resp.DocumentDigest, which JWS cannot do (KindError). The returned
// Finding has Pool and Endpoint empty: the caller knows where resp came
// from.
func (c *Checker) CheckSignature(resp api.SignResponse, artifact, doc []byte) Finding {
	return c.check(c.Tenant, resp, artifact, doc)
}

// CheckStored verifies a signature read from the store, over its recorded
// document digest.
func (c *Checker) CheckStored(s store.Signature) Finding {
	resp := api.SignResponse{
		ID: s.ID, Format: api.Format(s.Format), Key: s.KeyName, KeyVersion: s.KeyVersion,
		Algorithm: s.Algorithm, AlgorithmOID: s.AlgorithmOID, DigestAlgorithm: s.DigestAlgorithm, DigestOID: s.DigestOID,
		DocumentDigest: base64.StdEncoding.EncodeToString(s.DocumentDigest), DocumentID: s.DocumentID,
		Release: s.Release, Instance: s.Instance, AuditIndex: s.AuditIndex, SignedAt: s.SignedAt,
	}
	return c.check(s.TenantID, resp, s.Signature, nil)
}

// expectation resolves what a signature of tenant's key must look like:
// the policy entry, or for keys the policy does not list, the pinned
// inventory (algorithm of that version, its default digest, every pinned
// version allowed, every format).
func (c *Checker) expectation(tenant string, resp api.SignResponse) (KeyPolicy, bool) {
	if kp, ok := c.Policy.For(tenant, resp.Key); ok {
		return kp, true
	}
	tk, ok := c.Trust.Lookup(tenant, resp.Key, resp.KeyVersion)
	if !ok {
		return KeyPolicy{}, false
	}
	return KeyPolicy{Tenant: tenant, Key: resp.Key, Algorithm: tk.Algorithm}, true
}

func (c *Checker) check(tenant string, resp api.SignResponse, artifact, doc []byte) Finding {
	f := Finding{
		Time: c.now(), Release: resp.Release, Instance: resp.Instance, Key: resp.Key,
		KeyVersion: resp.KeyVersion, Format: resp.Format, SignatureID: resp.ID,
	}
	f.Kind, f.Detail = c.verdict(tenant, resp, artifact, doc)
	return f
}

func (c *Checker) verdict(tenant string, resp api.SignResponse, artifact, doc []byte) (Kind, string) {
	kp, ok := c.expectation(tenant, resp)
	if !ok {
		return KindDrift, fmt.Sprintf("key %s version %d is neither in the policy nor pinned", keyLabel(tenant, resp.Key), resp.KeyVersion)
	}
	h := kp.Hash()
	tk, ok := c.Trust.Lookup(tenant, resp.Key, resp.KeyVersion)
	if !ok {
		return KindDrift, fmt.Sprintf("key %s version %d is not pinned", keyLabel(tenant, resp.Key), resp.KeyVersion)
	}
	if tk.Algorithm != kp.Algorithm {
		return KindDrift, fmt.Sprintf("pinned key version %d is %s, policy wants %s", resp.KeyVersion, tk.Algorithm, kp.Algorithm)
	}
	if artifact == nil {
		var err error
		if artifact, err = node.DecodeArtifact(resp.Format, resp.Signature); err != nil {
			return KindInvalid, fmt.Sprintf("signature field does not decode: %v", err)
		}
	}
	in := sign.Input{Hash: h}
	claimed, cerr := base64.StdEncoding.DecodeString(resp.DocumentDigest)
	switch {
	case doc != nil:
		in.Document = doc
	case resp.Format == api.FormatJWS:
		return KindError, "jws cannot be verified without the document"
	case cerr != nil:
		return KindDrift, fmt.Sprintf("document_digest does not decode: %v", cerr)
	case len(claimed) != h.Size():
		return KindDrift, fmt.Sprintf("document_digest is %d bytes, %s wants %d", len(claimed), sign.HashName(h), h.Size())
	default:
		in.Digest = claimed
	}
	err := sign.Verify(resp.Format, artifact, in, sign.VerifyKey{Public: tk.Public, Algorithm: tk.Algorithm, Chain: tk.Chain, Roots: c.Trust.Roots()})
	var am *sign.AlgorithmMismatchError
	switch {
	case errors.As(err, &am):
		return KindDrift, err.Error()
	case errors.Is(err, sign.ErrInvalidSignature), errors.Is(err, sign.ErrMalformed), errors.Is(err, sign.ErrUntrusted):
		return KindInvalid, err.Error()
	case err != nil:
		return KindError, err.Error()
	}
	if doc != nil && (cerr != nil || !bytes.Equal(claimed, hashOf(h, doc))) {
		return KindDrift, "document_digest is not the " + sign.HashName(h) + " digest of the signed document"
	}
	return metadataDrift(kp, resp)
}

// metadataDrift compares the stamped metadata of a signature that verified.
func metadataDrift(kp KeyPolicy, resp api.SignResponse) (Kind, string) {
	h := kp.Hash()
	algOID, _ := ExpectedAlgorithmOID(kp.Algorithm, h) // validated with the policy
	digOID, _ := ExpectedDigestOID(h)
	checks := []struct{ field, got, want string }{
		{"algorithm", resp.Algorithm, string(kp.Algorithm)},
		{"digest_algorithm", resp.DigestAlgorithm, sign.HashName(h)},
		{"algorithm_oid", resp.AlgorithmOID, algOID},
		{"digest_oid", resp.DigestOID, digOID},
	}
	for _, c := range checks {
		if c.got != c.want {
			return KindDrift, fmt.Sprintf("%s %q, policy wants %q", c.field, c.got, c.want)
		}
	}
	if !kp.AllowsVersion(resp.KeyVersion) {
		return KindDrift, fmt.Sprintf("key_version %d outside policy range [%d,%d]", resp.KeyVersion, kp.MinVersion, kp.MaxVersion)
	}
	if !formatAllowed(kp, resp.Format) {
		return KindDrift, fmt.Sprintf("format %q not allowed for key %q", resp.Format, kp.Key)
	}
	return KindOK, ""
}

func formatAllowed(kp KeyPolicy, f api.Format) bool {
	for _, x := range kp.FormatList() {
		if x == f {
			return true
		}
	}
	return false
}

func hashOf(h crypto.Hash, b []byte) []byte {
	w := h.New()
	w.Write(b)
	return w.Sum(nil)
}
