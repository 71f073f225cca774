package reconcile

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"runtime"
	"sync"
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

// materials reads and parses key versions on first use, once per version
// (and one store read per key name), never per signature. Not safe for
// concurrent use: one goroutine resolves, workers only read the result.
type materials struct {
	ks     KeySource
	byRef  map[keyRef]*material
	byName map[[2]string][]store.KeyVersion
}

func newMaterials(ks KeySource) *materials {
	return &materials{ks: ks, byRef: map[keyRef]*material{}, byName: map[[2]string][]store.KeyVersion{}}
}

// of returns the material of s's key version; a version that is not in the
// store, or cannot be parsed, gets a material whose err says why.
func (ms *materials) of(ctx context.Context, s *store.Signature) (*material, error) {
	ref := keyRef{s.TenantID, s.KeyName, s.KeyVersion}
	if m, ok := ms.byRef[ref]; ok {
		return m, nil
	}
	nk := [2]string{s.TenantID, s.KeyName}
	vs, ok := ms.byName[nk]
	if !ok {
		var err error
		vs, err = ms.ks.KeyVersions(ctx, s.TenantID, s.KeyName)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("reconcile: key versions of %s/%s: %w", s.TenantID, s.KeyName, err)
		}
		ms.byName[nk] = vs
	}
	m := &material{err: fmt.Errorf("key version %s is not in the store", keys.Subject(s.TenantID, s.KeyName, s.KeyVersion))}
	for _, kv := range vs {
		if kv.Version == s.KeyVersion {
			pub, chain, err := keys.VerifyMaterial(kv)
			m = &material{kv: kv, pub: pub, chain: chain, err: err}
			break
		}
	}
	ms.byRef[ref] = m
	return m, nil
}

// VerifyConfig tunes VerifySignatures.
type VerifyConfig struct {
	// Workers verifying in parallel (default GOMAXPROCS).
	Workers int
}

// VerifySignatures classifies every signature in sigs, in parallel, and
// returns the verdicts in the same order.
func VerifySignatures(ctx context.Context, ks KeySource, sigs []store.Signature, cfg VerifyConfig) ([]Verdict, error) {
	out := make([]Verdict, len(sigs))
	p := startPipeline(ctx, ks, cfg)
	for start := 0; start < len(sigs); start += pageSize {
		end := min(start+pageSize, len(sigs))
		if err := p.add(sigs[start:end], out[start:end]); err != nil {
			p.wait()
			return nil, err
		}
	}
	if err := p.wait(); err != nil {
		return nil, err
	}
	return out, nil
}

// batchSize is how many signatures a worker takes at a time: small enough
// to balance the workers, large enough that handing out work is free.
const batchSize = 64

// batch is a run of signatures, the key material of each, and where their
// verdicts go.
type batch struct {
	sigs []store.Signature
	mats []*material
	out  []Verdict
}

// pipeline classifies signatures on worker goroutines while its caller is
// still reading more of them from the store, so selection and verification
// overlap instead of running one after the other.
type pipeline struct {
	ctx  context.Context
	mats *materials
	work chan batch
	wg   sync.WaitGroup
}

func startPipeline(ctx context.Context, ks KeySource, cfg VerifyConfig) *pipeline {
	workers := workersOf(cfg)
	p := &pipeline{ctx: ctx, mats: newMaterials(ks), work: make(chan batch, 4*workers)}
	for range workers {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for b := range p.work {
				if ctx.Err() != nil {
					continue // drain
				}
				for i := range b.sigs {
					b.out[i] = classifyOne(&b.sigs[i], b.mats[i])
				}
			}
		}()
	}
	return p
}

// add resolves the key material of sigs and queues them for the workers,
// which write their verdicts to out (len(out) == len(sigs)). It blocks
// while the workers are busy.
func (p *pipeline) add(sigs []store.Signature, out []Verdict) error {
	mats := make([]*material, len(sigs))
	for i := range sigs {
		m, err := p.mats.of(p.ctx, &sigs[i])
		if err != nil {
			return err
		}
		mats[i] = m
	}
	for start := 0; start < len(sigs); start += batchSize {
		end := min(start+batchSize, len(sigs))
		select {
		case p.work <- batch{sigs: sigs[start:end], mats: mats[start:end], out: out[start:end]}:
		case <-p.ctx.Done():
			return fmt.Errorf("reconcile: window verification: %w", p.ctx.Err())
		}
	}
	return nil
}

// wait ends the pipeline, waits for the workers, and reports cancellation.
func (p *pipeline) wait() error {
	close(p.work)
	p.wg.Wait()
	if err := p.ctx.Err(); err != nil {
		return fmt.Errorf("reconcile: window verification: %w", err)
	}
	return nil
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
