package evidence

import (
	"archive/tar"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"time"

	intoto "github.com/in-toto/attestation/go/v1"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/countersign/countersign/internal/auditlog"
	"github.com/countersign/countersign/internal/reconcile"
	"github.com/countersign/countersign/internal/store"
)

// Bundle constants.
const (
	// StatementFile is the DSSE envelope, always the archive's last entry.
	StatementFile = "statement.dsse.json"
	// PayloadType is the DSSE payload type of an in-toto statement.
	PayloadType = "application/vnd.in-toto+json"
	// PredicateType names the reconciliation summary predicate.
	PredicateType = "https://countersign.dev/attestation/reconciliation/v1"
	// EventStatement is the audit event type that anchors a bundle.
	EventStatement = "evidence.statement"
)

// Fixed names of the bundle's files.
const (
	FileManifest         = "snapshot/manifest.json"
	FileTimeline         = "timeline.json"
	FileReportJSON       = "reconcile/report.json"
	FileReportMarkdown   = "reconcile/report.md"
	FileCheckpointBefore = "audit/checkpoint-before.note"
	FileCheckpointAfter  = "audit/checkpoint-after.note"
	FileConsistency      = "audit/consistency-proof.json"
	FileLogKey           = "trust/log.vkey"
	FileCA               = "trust/ca.pem"
	dirSnapshots         = "snapshot/parts/"
	dirProofs            = "proofs/"
	dirArtifacts         = "artifacts/"
	dirKeys              = "trust/keys/"
)

// File is one file of a bundle.
type File struct {
	Name string
	Data []byte
}

// ConsistencyDoc is audit/consistency-proof.json.
type ConsistencyDoc struct {
	OldSize int64    `json:"old_size"`
	NewSize int64    `json:"new_size"`
	Hashes  []string `json:"hashes"` // base64, RFC 6962 order
}

// Contents is everything a bundle holds besides the statement.
type Contents struct {
	Incident string
	Report   *reconcile.Report
	// SnapshotManifest is the snapshot manifest's exact bytes; Snapshots,
	// optional, are its parts (named by part name).
	SnapshotManifest []byte
	Snapshots        []File
	// Timeline is the incident timeline (JSON).
	Timeline       []byte
	LogVerifierKey string
	CAChainPEM     []byte
	// Keys are the key versions whose public keys verify the artifacts.
	Keys []store.KeyVersion
	// Signatures are the remediated signatures; each gets its artifact,
	// its digest and its tlog-proof (Proofs, by signature ID).
	Signatures []store.Signature
	Proofs     map[string]auditlog.Proof
}

// Files lays out c as bundle files, sorted by name.
func (c *Contents) Files() ([]File, error) {
	if c.Report == nil || c.Report.Audit == nil {
		return nil, errors.New("evidence: the bundle needs a reconciliation report with its audit section")
	}
	rj, err := c.Report.JSON()
	if err != nil {
		return nil, err
	}
	a := c.Report.Audit
	cons, err := json.MarshalIndent(ConsistencyDoc{OldSize: a.Before.Size, NewSize: a.After.Size, Hashes: a.ConsistencyProof}, "", "  ")
	if err != nil {
		return nil, err
	}
	fs := []File{
		{FileReportJSON, rj},
		{FileReportMarkdown, c.Report.Markdown()},
		{FileCheckpointBefore, []byte(a.Before.Note)},
		{FileCheckpointAfter, []byte(a.After.Note)},
		{FileConsistency, append(cons, '\n')},
		{FileLogKey, []byte(strings.TrimSpace(c.LogVerifierKey) + "\n")},
	}
	if c.SnapshotManifest != nil {
		fs = append(fs, File{FileManifest, c.SnapshotManifest})
	}
	for _, s := range c.Snapshots {
		fs = append(fs, File{dirSnapshots + s.Name, s.Data})
	}
	if c.Timeline != nil {
		fs = append(fs, File{FileTimeline, c.Timeline})
	}
	if c.CAChainPEM != nil {
		fs = append(fs, File{FileCA, c.CAChainPEM})
	}
	for _, kv := range c.Keys {
		fs = append(fs, File{KeyFile(kv.TenantID, kv.Name, kv.Version), []byte(kv.PublicKeyPEM + kv.CertChainPEM)})
	}
	for _, s := range c.Signatures {
		fs = append(fs, File{ArtifactFile(s.ID, s.Format), s.Signature}, File{dirArtifacts + s.ID + ".digest", s.DocumentDigest})
		meta, err := json.MarshalIndent(artifactMeta{ID: s.ID, Tenant: s.TenantID, Key: s.KeyName, KeyVersion: s.KeyVersion,
			Format: s.Format, Algorithm: s.Algorithm, DigestAlgorithm: s.DigestAlgorithm, AuditIndex: s.AuditIndex}, "", "  ")
		if err != nil {
			return nil, err
		}
		fs = append(fs, File{dirArtifacts + s.ID + ".json", append(meta, '\n')})
		if p, ok := c.Proofs[s.ID]; ok {
			fs = append(fs, File{dirProofs + s.ID + ".tlog-proof", p.Marshal()})
		}
	}
	slices.SortFunc(fs, func(a, b File) int { return strings.Compare(a.Name, b.Name) })
	for i, f := range fs {
		if err := checkName(f.Name); err != nil {
			return nil, err
		}
		if i > 0 && fs[i-1].Name == f.Name {
			return nil, fmt.Errorf("evidence: two files named %s", f.Name)
		}
	}
	return fs, nil
}

// artifactMeta is artifacts/<id>.json: what an artifact claims.
type artifactMeta struct {
	ID              string `json:"id"`
	Tenant          string `json:"tenant"`
	Key             string `json:"key"`
	KeyVersion      int    `json:"key_version"`
	Format          string `json:"format"`
	Algorithm       string `json:"algorithm"`
	DigestAlgorithm string `json:"digest_algorithm"`
	AuditIndex      int64  `json:"audit_index"`
}

// KeyFile is the bundle path of a key version's public key and chain.
func KeyFile(tenant, name string, version int) string {
	return fmt.Sprintf("%s%s/%s@v%d.pem", dirKeys, tenant, name, version)
}

// ArtifactFile is the bundle path of a signature's artifact.
func ArtifactFile(id, format string) string {
	ext := map[string]string{"cms": ".p7s", "jws": ".jws", "raw": ".sig"}[format]
	if ext == "" {
		ext = ".bin"
	}
	return dirArtifacts + id + ext
}

func checkName(n string) error {
	if n == "" || n == StatementFile || path.Clean(n) != n || strings.HasPrefix(n, "/") || strings.HasPrefix(n, "../") || strings.Contains(n, "\\") {
		return fmt.Errorf("evidence: bad file name %q", n)
	}
	return nil
}

// Result describes a built bundle.
type Result struct {
	Files []string
	// StatementSHA256 is the hex SHA-256 of statement.dsse.json, the value
	// the anchoring audit event records.
	StatementSHA256 string
	KeyID           string
}

// Build writes the canonical bundle of files to w with a statement signed
// by lead (ECDSA P-256 or Ed25519).
func Build(ctx context.Context, w io.Writer, files []File, summary reconcile.Summary, lead crypto.Signer) (Result, error) {
	lk, err := newLeadKey(lead, lead.Public())
	if err != nil {
		return Result{}, err
	}
	stmt, err := statement(files, summary)
	if err != nil {
		return Result{}, err
	}
	es, err := dsse.NewEnvelopeSigner(lk)
	if err != nil {
		return Result{}, fmt.Errorf("evidence: %w", err)
	}
	env, err := es.SignPayload(ctx, PayloadType, stmt)
	if err != nil {
		return Result{}, fmt.Errorf("evidence: sign statement: %w", err)
	}
	envJSON, err := json.MarshalIndent(env, "", "  ")
	if err != nil {
		return Result{}, err
	}
	envJSON = append(envJSON, '\n')
	all := append(slices.Clone(files), File{StatementFile, envJSON})
	if err := writeTar(w, all); err != nil {
		return Result{}, err
	}
	sum := sha256.Sum256(envJSON)
	res := Result{StatementSHA256: hex.EncodeToString(sum[:]), KeyID: lk.id}
	for _, f := range all {
		res.Files = append(res.Files, f.Name)
	}
	return res, nil
}

// statement is the in-toto Statement v1 over files, as JSON.
func statement(files []File, summary reconcile.Summary) ([]byte, error) {
	sj, err := json.Marshal(summary)
	if err != nil {
		return nil, err
	}
	pred := &structpb.Struct{}
	if err := protojson.Unmarshal(sj, pred); err != nil {
		return nil, fmt.Errorf("evidence: predicate: %w", err)
	}
	st := &intoto.Statement{Type: intoto.StatementTypeUri, PredicateType: PredicateType, Predicate: pred}
	for _, f := range files {
		sum := sha256.Sum256(f.Data)
		st.Subject = append(st.Subject, &intoto.ResourceDescriptor{Name: f.Name, Digest: map[string]string{"sha256": hex.EncodeToString(sum[:])}})
	}
	if err := st.Validate(); err != nil {
		return nil, fmt.Errorf("evidence: statement: %w", err)
	}
	b, err := protojson.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("evidence: encode statement: %w", err)
	}
	return b, nil
}

// header is the canonical tar header of a bundle file.
func header(name string, size int) *tar.Header {
	return &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(size), ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
}

func writeTar(w io.Writer, files []File) error {
	tw := tar.NewWriter(w)
	for _, f := range files {
		if err := tw.WriteHeader(header(f.Name, len(f.Data))); err != nil {
			return fmt.Errorf("evidence: tar %s: %w", f.Name, err)
		}
		if _, err := tw.Write(f.Data); err != nil {
			return fmt.Errorf("evidence: tar %s: %w", f.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("evidence: tar: %w", err)
	}
	return nil
}

// AnchorEvent is the audit event that anchors a bundle's statement in the
// log; the caller commits it (store.AppendEvents).
func AnchorEvent(incident string, res Result, actor string, now time.Time) (store.AuditEvent, error) {
	return auditlog.Event{Type: EventStatement, Time: now, Actor: actor, Subject: "evidence:" + incident,
		Details: map[string]any{"statement_sha256": res.StatementSHA256, "lead_key_id": res.KeyID, "files": len(res.Files)}}.Record()
}
