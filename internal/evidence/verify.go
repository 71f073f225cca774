package evidence

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	intoto "github.com/in-toto/attestation/go/v1"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/countersign/countersign/internal/auditlog"
	"github.com/countersign/countersign/internal/pki"
	"github.com/countersign/countersign/internal/reconcile"
	"github.com/countersign/countersign/internal/store"
)

// ErrVerify is wrapped by every verification failure.
var ErrVerify = errors.New("evidence: verification failed")

// FileError names the bundle file a verification failure is about ("" for
// the archive as a whole).
type FileError struct {
	File   string
	Reason string
}

func (e *FileError) Error() string {
	if e.File == "" {
		return "evidence: " + e.Reason
	}
	return "evidence: " + e.File + ": " + e.Reason
}

func (e *FileError) Unwrap() error { return ErrVerify }

// Check is one thing Verify verified.
type Check struct {
	File string `json:"file"`
	What string `json:"what"`
}

// Verified is what a successful Verify checked.
type Verified struct {
	Checks          []Check
	Files           int
	KeyID           string
	StatementSHA256 string
	Summary         reconcile.Summary
}

// Verify checks a bundle offline against the incident lead's public key:
// the DSSE signature, that the statement's subjects are exactly the other
// files with their SHA-256, in canonical order, that the archive is
// byte-for-byte the canonical encoding, and then each file's own meaning
// (checkpoints, consistency proof, tlog-proofs, artifacts, report).
//
// It reads r once, hashing each file as it streams past: snapshot parts,
// the bulk of a bundle, are never held in memory (the other files, at most
// maxHeld bytes, are kept for the checks that read them).
func Verify(ctx context.Context, r io.Reader, lead crypto.PublicKey) (*Verified, error) {
	br := newBundleReader(r)
	if err := br.read(); err != nil {
		var fe *FileError
		if errors.As(err, &fe) {
			return nil, err
		}
		return nil, fmt.Errorf("evidence: read bundle: %w", err)
	}
	files := br.entries
	v := &Verified{Files: len(files)}
	last := files[len(files)-1]
	if last.Name != StatementFile {
		for _, f := range files {
			if f.Name == StatementFile {
				return nil, &FileError{File: StatementFile, Reason: "is not the last entry of the archive (entries were reordered)"}
			}
		}
		return nil, &FileError{File: StatementFile, Reason: "missing: the bundle has no signed statement"}
	}
	stmt, err := openStatement(ctx, last.Data, lead, v)
	if err != nil {
		return nil, err
	}
	v.StatementSHA256 = hex.EncodeToString(last.Sum[:])
	body := files[:len(files)-1]
	if err := checkSubjects(stmt, body); err != nil {
		return nil, err
	}
	v.add(StatementFile, fmt.Sprintf("in-toto statement covers %d files by SHA-256", len(body)))
	if br.canon != nil {
		return nil, br.canon
	}
	v.add("", "archive is the canonical encoding (no byte outside the files changed)")
	held := make([]File, len(body))
	for i, e := range body {
		held[i] = e.File
	}
	if err := checkContents(held, stmt, v); err != nil {
		return nil, err
	}
	return v, nil
}

func (v *Verified) add(file, what string) { v.Checks = append(v.Checks, Check{File: file, What: what}) }

func openStatement(ctx context.Context, data []byte, lead crypto.PublicKey, v *Verified) (*intoto.Statement, error) {
	bad := func(format string, a ...any) error {
		return &FileError{File: StatementFile, Reason: fmt.Sprintf(format, a...)}
	}
	var env dsse.Envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return nil, bad("is not a DSSE envelope: %v", err)
	}
	if env.PayloadType != PayloadType {
		return nil, bad("payload type is %q, want %q", env.PayloadType, PayloadType)
	}
	lk, err := newLeadKey(nil, lead)
	if err != nil {
		return nil, err
	}
	ev, err := dsse.NewEnvelopeVerifier(lk)
	if err != nil {
		return nil, fmt.Errorf("evidence: %w", err)
	}
	accepted, payload, err := ev.VerifyAndDecode(ctx, &env)
	if err != nil || len(accepted) == 0 {
		var ids []string
		for _, s := range env.Signatures {
			ids = append(ids, s.KeyID)
		}
		return nil, bad("is not signed by the incident lead's key %s (signed by %v)", lk.id, ids)
	}
	v.KeyID = lk.id
	v.add(StatementFile, "DSSE signature by the incident lead's key "+lk.id)
	var st intoto.Statement
	if err := protojson.Unmarshal(payload, &st); err != nil {
		return nil, bad("payload is not an in-toto statement: %v", err)
	}
	if err := st.Validate(); err != nil {
		return nil, bad("invalid in-toto statement: %v", err)
	}
	if st.GetType() != intoto.StatementTypeUri || st.GetPredicateType() != PredicateType {
		return nil, bad("statement type %q / predicate %q, want %q / %q", st.GetType(), st.GetPredicateType(), intoto.StatementTypeUri, PredicateType)
	}
	pj, err := protojson.Marshal(st.GetPredicate())
	if err == nil {
		err = json.Unmarshal(pj, &v.Summary)
	}
	if err != nil {
		return nil, bad("predicate is not a reconciliation summary: %v", err)
	}
	return &st, nil
}

func checkSubjects(st *intoto.Statement, files []entry) error {
	subjects := st.GetSubject()
	want := map[string]string{}
	for _, s := range subjects {
		want[s.GetName()] = s.GetDigest()["sha256"]
	}
	have := map[string]bool{}
	for _, f := range files {
		have[f.Name] = true
		d, ok := want[f.Name]
		if !ok {
			return &FileError{File: f.Name, Reason: "is not covered by the signed statement (added)"}
		}
		if got := hex.EncodeToString(f.Sum[:]); got != d {
			return &FileError{File: f.Name, Reason: fmt.Sprintf("SHA-256 is %s, the signed statement says %s (changed)", got, d)}
		}
	}
	for _, s := range subjects {
		if !have[s.GetName()] {
			return &FileError{File: s.GetName(), Reason: "is listed in the signed statement but missing from the archive (removed)"}
		}
	}
	for i, f := range files {
		if subjects[i].GetName() != f.Name {
			return &FileError{File: f.Name, Reason: fmt.Sprintf("is entry %d of the archive, the signed statement lists %s there (reordered)", i+1, subjects[i].GetName())}
		}
	}
	return nil
}

func fileMap(files []File) map[string][]byte {
	m := map[string][]byte{}
	for _, f := range files {
		m[f.Name] = f.Data
	}
	return m
}

func checkContents(files []File, _ *intoto.Statement, v *Verified) error {
	fm := fileMap(files)
	need := func(name string) ([]byte, error) {
		b, ok := fm[name]
		if !ok {
			return nil, &FileError{File: name, Reason: "missing: every bundle has it"}
		}
		return b, nil
	}
	vk, err := need(FileLogKey)
	if err != nil {
		return err
	}
	vkey := strings.TrimSpace(string(vk))
	before, err := need(FileCheckpointBefore)
	if err != nil {
		return err
	}
	after, err := need(FileCheckpointAfter)
	if err != nil {
		return err
	}
	for name, note := range map[string][]byte{FileCheckpointBefore: before, FileCheckpointAfter: after} {
		if len(note) == 0 && name == FileCheckpointBefore {
			continue // the empty tree: nothing before the deploy
		}
		if _, err := auditlog.OpenCheckpoint(note, vkey); err != nil {
			return &FileError{File: name, Reason: err.Error()}
		}
		v.add(name, "checkpoint signature under "+FileLogKey)
	}
	cj, err := need(FileConsistency)
	if err != nil {
		return err
	}
	var cons ConsistencyDoc
	if err := json.Unmarshal(cj, &cons); err != nil {
		return &FileError{File: FileConsistency, Reason: err.Error()}
	}
	if len(before) > 0 {
		if err := reconcile.CheckConsistencyProof(before, after, cons.Hashes, vkey); err != nil {
			return &FileError{File: FileConsistency, Reason: err.Error()}
		}
		v.add(FileConsistency, fmt.Sprintf("RFC 6962 consistency %d -> %d", cons.OldSize, cons.NewSize))
	}
	rj, err := need(FileReportJSON)
	if err != nil {
		return err
	}
	var rep reconcile.Report
	if err := json.Unmarshal(rj, &rep); err != nil {
		return &FileError{File: FileReportJSON, Reason: err.Error()}
	}
	got, _ := json.Marshal(rep.Summary())
	want, _ := json.Marshal(v.Summary)
	if !bytes.Equal(got, want) {
		return &FileError{File: FileReportJSON, Reason: "its summary differs from the signed statement's predicate"}
	}
	v.add(FileReportJSON, "summary equals the signed predicate")
	return checkArtifacts(fm, vkey, &rep, v)
}

// checkArtifacts re-verifies every artifact and its tlog-proof, and checks
// the class matches the report's.
func checkArtifacts(fm map[string][]byte, vkey string, rep *reconcile.Report, v *Verified) error {
	class := map[string]reconcile.Verdict{}
	if rep.Signatures != nil {
		for _, t := range rep.Signatures.Remediation {
			for _, d := range t.Documents {
				class[d.SignatureID] = d
			}
		}
	}
	for name, data := range fm {
		id, ok := strings.CutSuffix(strings.TrimPrefix(name, dirArtifacts), ".json")
		if !strings.HasPrefix(name, dirArtifacts) || !ok {
			continue
		}
		var m artifactMeta
		if err := json.Unmarshal(data, &m); err != nil || m.ID != id {
			return &FileError{File: name, Reason: "is not the metadata of artifact " + id}
		}
		art, ok := fm[ArtifactFile(id, m.Format)]
		if !ok {
			return &FileError{File: ArtifactFile(id, m.Format), Reason: "missing"}
		}
		kf := KeyFile(m.Tenant, m.Key, m.KeyVersion)
		kpem, ok := fm[kf]
		if !ok {
			return &FileError{File: kf, Reason: "missing: artifact " + id + " needs it"}
		}
		kv := store.KeyVersion{TenantID: m.Tenant, Name: m.Key, Version: m.KeyVersion, Algorithm: m.Algorithm}
		if kv.PublicKeyPEM, kv.CertChainPEM, ok = splitKeyPEM(string(kpem)); !ok {
			return &FileError{File: kf, Reason: "holds no public key"}
		}
		s := store.Signature{ID: id, TenantID: m.Tenant, KeyName: m.Key, KeyVersion: m.KeyVersion, Format: m.Format, Algorithm: m.Algorithm,
			DigestAlgorithm: m.DigestAlgorithm, DocumentDigest: fm[dirArtifacts+id+".digest"], Signature: art, AuditIndex: m.AuditIndex}
		got := reconcile.ClassifyWith(&s, kv)
		if want, ok := class[id]; ok && want.Class != got.Class {
			return &FileError{File: ArtifactFile(id, m.Format), Reason: fmt.Sprintf("re-verifies as %s, the report says %s", got.Class, want.Class)}
		}
		v.add(ArtifactFile(id, m.Format), "re-verified: "+string(got.Class))
		pf := dirProofs + id + ".tlog-proof"
		if pb, ok := fm[pf]; ok {
			p, err := auditlog.ParseProof(pb)
			if err == nil {
				_, _, err = auditlog.VerifyProof(p, vkey, nil)
			}
			if err != nil {
				return &FileError{File: pf, Reason: err.Error()}
			}
			if p.Index != m.AuditIndex || !bytes.Contains(p.Extra, []byte(`"subject":"signature:`+id+`"`)) {
				return &FileError{File: pf, Reason: "proves another entry than signature " + id}
			}
			if err := checkEntryArtifact(p.Extra, art); err != nil {
				return &FileError{File: pf, Reason: err.Error()}
			}
			v.add(pf, fmt.Sprintf("inclusion of entry %d in the signed log", p.Index))
		}
	}
	return nil
}

func checkEntryArtifact(entry, artifact []byte) error {
	var e struct {
		Details struct {
			ArtifactSHA256 string `json:"artifact_sha256"`
		} `json:"details"`
	}
	if err := json.Unmarshal(entry, &e); err != nil {
		return fmt.Errorf("log entry does not decode: %w", err)
	}
	sum := sha256.Sum256(artifact)
	if e.Details.ArtifactSHA256 != hex.EncodeToString(sum[:]) {
		return errors.New("the log entry binds another artifact than the bundle's")
	}
	return nil
}

// splitKeyPEM splits a key file into its public key block and chain.
func splitKeyPEM(s string) (pub, chain string, ok bool) {
	const end = "-----END PUBLIC KEY-----\n"
	i := strings.Index(s, end)
	if i < 0 {
		return "", "", false
	}
	if _, err := pki.ParsePublicKeyPEM(s[:i+len(end)]); err != nil {
		return "", "", false
	}
	return s[:i+len(end)], s[i+len(end):], true
}
