package reconcile

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/keys"
	"github.com/countersign/countersign/internal/sign"
	"github.com/countersign/countersign/internal/store"
)

// Class is the verdict on one signature.
type Class string

// Classes of window verification.
const (
	// ClassValid: verifies under the named key version with the claimed
	// algorithm and digest, and the digest is the algorithm's default.
	ClassValid Class = "valid"
	// ClassInvalid: does not verify (changed bytes, another digest, another
	// key) or cannot be parsed as its format.
	ClassInvalid Class = "invalid"
	// ClassDrift: genuine, but its algorithm, digest or parameters are not
	// what it claims or what policy expects.
	ClassDrift Class = "metadata-drift"
	// ClassUnverifiable: cannot be checked from what is stored (a detached
	// JWS whose document is not stored, missing key material).
	ClassUnverifiable Class = "unverifiable"
)

// Classes lists every class in report order.
var Classes = []Class{ClassValid, ClassInvalid, ClassDrift, ClassUnverifiable}

// Remedy is the proposed remediation for one document.
type Remedy string

// Remedies. Existing signatures are never rewritten (DESIGN invariant 3).
const (
	RemedyNone Remedy = "none"
	// RemedyResign: issue a new, policy-conforming signature over the same
	// document under the stable release; the old one stays as it is.
	RemedyResign Remedy = "re-sign"
	// RemedyAttest: the signature is genuine and at least as strong as
	// policy; a signed attestation (the evidence bundle) records that.
	RemedyAttest Remedy = "attest"
	// RemedyVoidReissue: the artifact does not verify; relying parties must
	// be told it is void and given a new signature.
	RemedyVoidReissue Remedy = "void-and-reissue"
	// RemedyManual: the store does not hold what is needed to decide.
	RemedyManual Remedy = "manual-review"
)

// Verdict is the classification of one signature and its remediation.
type Verdict struct {
	SignatureID     string    `json:"signature_id"`
	TenantID        string    `json:"tenant"`
	DocumentID      string    `json:"document_id,omitempty"`
	Key             string    `json:"key"`
	KeyVersion      int       `json:"key_version"`
	Format          string    `json:"format"`
	Algorithm       string    `json:"algorithm"`
	DigestAlgorithm string    `json:"digest_algorithm"`
	Release         string    `json:"release"`
	Instance        string    `json:"instance"`
	AuditIndex      int64     `json:"audit_index"`
	SignedAt        time.Time `json:"signed_at"`
	Class           Class     `json:"class"`
	Reason          string    `json:"reason,omitempty"`
	Remedy          Remedy    `json:"remedy"`
	RemedyReason    string    `json:"remedy_reason,omitempty"`
}

// KeySource reads key versions (store.Store).
type KeySource interface {
	KeyVersions(ctx context.Context, tenantID, name string) ([]store.KeyVersion, error)
}

// keyRef names one key version.
type keyRef struct {
	tenant, name string
	version      int
}

// material is a key version's parsed verification material.
type material struct {
	kv    store.KeyVersion
	pub   crypto.PublicKey
	chain []*x509.Certificate
	err   error // why it cannot be used
}

// loadMaterial reads and parses the key versions sigs name, once each.
func loadMaterial(ctx context.Context, ks KeySource, sigs []store.Signature) (map[keyRef]*material, error) {
	out := map[keyRef]*material{}
	byName := map[[2]string][]store.KeyVersion{}
	for i := range sigs {
		s := &sigs[i]
		ref := keyRef{s.TenantID, s.KeyName, s.KeyVersion}
		if _, ok := out[ref]; ok {
			continue
		}
		nk := [2]string{s.TenantID, s.KeyName}
		vs, ok := byName[nk]
		if !ok {
			var err error
			vs, err = ks.KeyVersions(ctx, s.TenantID, s.KeyName)
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				return nil, fmt.Errorf("reconcile: key versions of %s/%s: %w", s.TenantID, s.KeyName, err)
			}
			byName[nk] = vs
		}
		m := &material{err: fmt.Errorf("key version %s is not in the store", keys.Subject(s.TenantID, s.KeyName, s.KeyVersion))}
		for _, kv := range vs {
			if kv.Version == s.KeyVersion {
				pub, chain, err := keys.VerifyMaterial(kv)
				m = &material{kv: kv, pub: pub, chain: chain, err: err}
				break
			}
		}
		out[ref] = m
	}
	return out, nil
}

// VerifyConfig tunes VerifySignatures.
type VerifyConfig struct {
	// Workers verifying in parallel (default GOMAXPROCS).
	Workers int
}

// VerifySignatures classifies every signature in sigs, in parallel, and
// returns the verdicts in the same order.
func VerifySignatures(ctx context.Context, ks KeySource, sigs []store.Signature, cfg VerifyConfig) ([]Verdict, error) {
	mats, err := loadMaterial(ctx, ks, sigs)
	if err != nil {
		return nil, err
	}
	workers := workersOf(cfg)
	out := make([]Verdict, len(sigs))
	const chunk = 64
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				start := int(next.Add(chunk)) - chunk
				if start >= len(sigs) {
					return
				}
				for i := start; i < min(start+chunk, len(sigs)); i++ {
					s := &sigs[i]
					out[i] = classifyOne(s, mats[keyRef{s.TenantID, s.KeyName, s.KeyVersion}])
				}
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("reconcile: window verification: %w", err)
	}
	return out, nil
}

// ClassifyWith classifies one signature against key version kv, offline
// (the evidence verifier re-checks bundled artifacts with it).
func ClassifyWith(s *store.Signature, kv store.KeyVersion) Verdict {
	pub, chain, err := keys.VerifyMaterial(kv)
	return classifyOne(s, &material{kv: kv, pub: pub, chain: chain, err: err})
}

// classifyOne verifies one signature against its key version's material
// (nil means the key version is unknown) and proposes a remedy.
func classifyOne(s *store.Signature, m *material) Verdict {
	v := Verdict{SignatureID: s.ID, TenantID: s.TenantID, DocumentID: s.DocumentID, Key: s.KeyName,
		KeyVersion: s.KeyVersion, Format: s.Format, Algorithm: s.Algorithm, DigestAlgorithm: s.DigestAlgorithm,
		Release: s.Release, Instance: s.Instance, AuditIndex: s.AuditIndex, SignedAt: s.SignedAt}
	var attestable bool
	v.Class, v.Reason, attestable = classify(s, m)
	v.Remedy, v.RemedyReason = remedy(s, v.Class, attestable)
	return v
}

// classify returns the class, the reason, and for drift whether the
// signature is attestable: genuine with exactly the claimed algorithm and
// digest, the digest merely not the policy default yet at least as strong.
func classify(s *store.Signature, m *material) (Class, string, bool) {
	c, r := classifyOnly(s, m)
	if c != ClassDrift || m == nil || m.err != nil {
		return c, r, false
	}
	alg, aerr := keys.ParseAlgorithm(s.Algorithm)
	h, herr := sign.HashByName(s.DigestAlgorithm)
	attestable := aerr == nil && herr == nil && keys.Algorithm(m.kv.Algorithm) == alg && h != alg.Hash() && h.Size() >= alg.Hash().Size() &&
		r == policyDigestReason(s.DigestAlgorithm, alg)
	return c, r, attestable
}

func policyDigestReason(digest string, alg keys.Algorithm) string {
	return fmt.Sprintf("verifies with %s, but %s signs with %s by policy", digest, alg, sign.HashName(alg.Hash()))
}

func classifyOnly(s *store.Signature, m *material) (Class, string) {
	if m == nil {
		return ClassUnverifiable, "key version " + keys.Subject(s.TenantID, s.KeyName, s.KeyVersion) + " is unknown"
	}
	if m.err != nil {
		return ClassUnverifiable, "key material unusable: " + m.err.Error()
	}
	if api.Format(s.Format) == api.FormatJWS {
		return ClassUnverifiable, "detached JWS (RFC 7797) signs the document itself, which is not stored; only its digest is"
	}
	alg, err := keys.ParseAlgorithm(s.Algorithm)
	if err != nil {
		return ClassDrift, fmt.Sprintf("stamped algorithm %q is not a known algorithm", s.Algorithm)
	}
	h, err := sign.HashByName(s.DigestAlgorithm)
	if err != nil {
		return ClassDrift, fmt.Sprintf("stamped digest algorithm %q is not a known digest", s.DigestAlgorithm)
	}
	if len(s.DocumentDigest) != h.Size() {
		return ClassInvalid, fmt.Sprintf("stored document digest is %d bytes, a %s digest is %d", len(s.DocumentDigest), s.DigestAlgorithm, h.Size())
	}
	keyAlg := keys.Algorithm(m.kv.Algorithm)
	verifyAs := alg
	if keyAlg != alg {
		verifyAs = keyAlg // the key decides what the bytes can be; the stamp is drift if they verify
	}
	err = sign.Verify(api.Format(s.Format), s.Signature, sign.Input{Digest: s.DocumentDigest, Hash: h},
		sign.VerifyKey{Public: m.pub, Algorithm: verifyAs, Chain: m.chain})
	var am *sign.AlgorithmMismatchError
	switch {
	case err == nil && keyAlg != alg:
		return ClassDrift, fmt.Sprintf("verifies as %s, the key version's algorithm, but is stamped %s", keyAlg, alg)
	case err == nil && h != alg.Hash():
		return ClassDrift, policyDigestReason(s.DigestAlgorithm, alg)
	case err == nil:
		return ClassValid, ""
	case errors.As(err, &am):
		return ClassDrift, fmt.Sprintf("genuine, but its %s is %s where %s is claimed", am.Field, am.Got, am.Want)
	case errors.Is(err, sign.ErrInvalidSignature):
		return ClassInvalid, "does not verify under " + keys.Subject(s.TenantID, s.KeyName, s.KeyVersion) + " over the stored digest"
	case errors.Is(err, sign.ErrMalformed):
		return ClassInvalid, "artifact cannot be parsed: " + err.Error()
	case errors.Is(err, sign.ErrDigestOnly):
		return ClassUnverifiable, "the format needs the document, which is not stored"
	default:
		return ClassUnverifiable, err.Error()
	}
}

func remedy(s *store.Signature, c Class, attestable bool) (Remedy, string) {
	switch c {
	case ClassValid:
		return RemedyNone, ""
	case ClassInvalid:
		return RemedyVoidReissue, "relying parties holding this artifact will reject it; notify the tenant that it is void and issue a new signature over the same " +
			"document under the stable release (the old record stays in the store and the log)"
	case ClassDrift:
		if attestable {
			return RemedyAttest, "the signature is genuine and its digest is at least as strong as policy; attest to it in the signed reconciliation report rather than re-sign"
		}
		return RemedyResign, "the signature is genuine but made with parameters policy does not accept; issue a conforming signature over the same document and keep the old one"
	}
	if api.Format(s.Format) == api.FormatJWS {
		return RemedyResign, "the document is needed to verify a detached JWS; ask the tenant to resubmit it so the signature can be checked or a new one issued"
	}
	return RemedyManual, "key material needed to verify is missing; an operator must recover it before deciding"
}

func workersOf(cfg VerifyConfig) int {
	if cfg.Workers > 0 {
		return cfg.Workers
	}
	return runtime.GOMAXPROCS(0)
}
