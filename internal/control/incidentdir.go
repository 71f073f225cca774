package control

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/countersign/countersign/internal/gateway"
	"github.com/countersign/countersign/internal/install"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/countersign/countersign/internal/keys"
	"github.com/countersign/countersign/internal/keys/soft"
)

// Files of an incident, under <data>/incidents/<incident>/. Every file is
// written whole (temporary file, sync, rename), so a step killed half-way
// leaves either the old file or the new one, and a re-run of the step finds
// what an earlier attempt made under the same playbook token.
const (
	// IncidentsDir holds one directory per incident.
	IncidentsDir = "incidents"
	// ReplayFile is the replay step's reconcile.ReplayReport (JSON).
	ReplayFile = "replay.json"
	// ReportFile and ReportMarkdownFile are the reconciliation report.
	ReportFile         = "reconciliation.json"
	ReportMarkdownFile = "reconciliation.md"
	// NoticesDir holds one NoticeRecord per notice (<phase>[-<tenant>].json)
	// and, under <incident>/, the file channel's deliveries.
	NoticesDir = "notices"
	// BundleFile is the evidence bundle; BundleRecordFile records its
	// digests and anchoring audit event.
	BundleFile       = "evidence.tar"
	BundleRecordFile = "evidence.json"
	// PostmortemFile is the postmortem draft (Markdown).
	PostmortemFile = "postmortem.md"
)

// Incident lead key: an Ed25519 soft key that signs evidence statements.
// The private key stays in the key provider (encrypted); the data directory
// holds its URI and its public key, which verifiers get out of band.
const (
	LeadKeyLabel   = "incident-lead"
	LeadKeyURIFile = "incident-lead.uri"
	LeadKeyPubFile = "incident-lead.pub.pem"
)

// IncidentDir is the directory of an incident's files in data directory dir.
func IncidentDir(dir, incident string) string {
	return filepath.Join(dir, IncidentsDir, incident)
}

func (w *World) incidentDir(incident string) (string, error) {
	if incident == "" || strings.ContainsAny(incident, `/\`) || strings.HasPrefix(incident, ".") {
		return "", fmt.Errorf("control: incident id %q is not a directory name", incident)
	}
	d := IncidentDir(w.cfg.Dir, incident)
	if err := os.MkdirAll(filepath.Join(d, NoticesDir), 0o750); err != nil {
		return "", err
	}
	return d, nil
}

// writeFileAtomic writes data to path whole: a temporary file in the same
// directory, synced, then renamed over path.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), perm)
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func writeJSONAtomic(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(b, '\n'), 0o640)
}

// readJSON reads path into v; ok is false if it does not exist.
func readJSON(path string, v any) (ok bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("control: %s: %w", path, err)
	}
	return true, nil
}

// ensureLeadKey creates the incident lead key on a world's first start,
// before any incident can be open (a key operation during an incident
// would break the key freeze), and records the creation as an audit event.
func (w *World) ensureLeadKey(ctx context.Context) error {
	return EnsureLeadKey(ctx, w.inst, w.rec)
}

// EnsureLeadKey creates, once, the incident lead's Ed25519 key that signs
// evidence bundles (URI and public key files in the installation), its
// creation recorded through rec. The control plane calls it at start; on
// Kubernetes run it before the installation becomes read-only Secrets
// (countersign control --prepare).
func EnsureLeadKey(ctx context.Context, inst *install.Installation, rec gateway.Recorder) error {
	uriFile := filepath.Join(inst.Dir, LeadKeyURIFile)
	if _, err := os.Stat(uriFile); err == nil {
		return nil
	}
	uri, pub, err := inst.Registry.Generate(ctx, soft.Scheme, keys.Ed25519, LeadKeyLabel)
	if err != nil {
		return fmt.Errorf("control: incident lead key: %w", err)
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return err
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki})
	if err := writeFileAtomic(filepath.Join(inst.Dir, LeadKeyPubFile), pubPEM, 0o644); err != nil {
		return err
	}
	if err := rec.Record(ctx, "keys.incident_lead_created", "key/"+LeadKeyLabel,
		map[string]any{"uri": uri, "algorithm": string(keys.Ed25519), "public_key": string(pubPEM)}); err != nil {
		return err
	}
	// The URI file is written last: its presence means the key and its
	// audit event exist.
	return writeFileAtomic(uriFile, []byte(uri+"\n"), 0o600)
}

// leadSigner opens the incident lead key.
func (w *World) leadSigner(ctx context.Context) (crypto.Signer, error) {
	b, err := os.ReadFile(filepath.Join(w.cfg.Dir, LeadKeyURIFile))
	if err != nil {
		return nil, fmt.Errorf("control: incident lead key: %w", err)
	}
	return w.inst.Registry.Signer(ctx, strings.TrimSpace(string(b)))
}

// LeadPublicKey reads the incident lead's public key from data directory dir.
func LeadPublicKey(dir string) (crypto.PublicKey, error) {
	b, err := os.ReadFile(filepath.Join(dir, LeadKeyPubFile))
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("control: %s holds no PEM block", LeadKeyPubFile)
	}
	return x509.ParsePKIXPublicKey(blk.Bytes)
}
