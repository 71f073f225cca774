package reconcile

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/countersign/countersign/internal/auditlog"
	"github.com/countersign/countersign/internal/keys"
	"github.com/countersign/countersign/internal/store"
)

// ErrNoCheckpointBefore is returned by CheckpointBefore when the history
// holds no checkpoint signed before the given time.
var ErrNoCheckpointBefore = errors.New("reconcile: no checkpoint before the deploy")

// AuditStore is what audit forensics reads (store.Store).
type AuditStore interface {
	auditlog.Reader
	KeySource
	AuditSize(ctx context.Context) (int64, error)
	Signatures(ctx context.Context, fromIndex, toIndex int64, limit int) ([]store.Signature, error)
}

// CheckpointInfo is a verified checkpoint as the report shows it.
type CheckpointInfo struct {
	Size int64  `json:"size"`
	Root string `json:"root"` // base64
	Note string `json:"note"` // the signed note, verbatim
}

// Gap kinds.
const (
	GapMissingEvent          = "missing-event"
	GapSignatureWithoutEvent = "signature-without-event"
	GapEventWithoutSignature = "event-without-signature"
	GapArtifactMismatch      = "artifact-mismatch"
)

// Gap is one hole or disagreement between the audit log and the store.
type Gap struct {
	Kind   string `json:"kind"`
	Index  int64  `json:"index"`
	Detail string `json:"detail"`
}

// KeyFinding is a key event or key use inside the window.
type KeyFinding struct {
	Index   int64     `json:"index"`
	Type    string    `json:"type"`
	Subject string    `json:"subject"`
	Time    time.Time `json:"time"`
	// Allowed is true for the incident freeze itself and for operations
	// made under a declared compromise.
	Allowed bool   `json:"allowed"`
	Detail  string `json:"detail"`
}

// AuditReport is the audit forensics of an incident.
type AuditReport struct {
	Before     CheckpointInfo `json:"before"`
	After      CheckpointInfo `json:"after"`
	Consistent bool           `json:"consistent"`
	// ConsistencyProof is the RFC 6962 proof from Before to After (base64).
	ConsistencyProof []string `json:"consistency_proof"`
	// ScannedFrom and ScannedTo bound the events examined: [Before.Size, audit size).
	ScannedFrom int64 `json:"scanned_from"`
	ScannedTo   int64 `json:"scanned_to"`
	// Counts of events inside the window.
	EventCounts        map[string]int            `json:"event_counts"`
	CountsByRelease    map[string]map[string]int `json:"counts_by_release"`
	CountsByInstance   map[string]map[string]int `json:"counts_by_instance"`
	Gaps               []Gap                     `json:"gaps"`
	KeyFindings        []KeyFinding              `json:"key_findings"`
	KeyEventsViolating int                       `json:"key_events_violating"`
}

// OK reports whether the log is consistent, gap-free and key-quiet.
func (r *AuditReport) OK() bool {
	return r.Consistent && len(r.Gaps) == 0 && r.KeyEventsViolating == 0
}

// AuditConfig configures Audit.
type AuditConfig struct {
	Store       AuditStore
	VerifierKey string // the log's signed-note verifier key
	// Before is the last signed checkpoint before the regressive deploy
	// (CheckpointBefore); nil means the empty tree.
	Before []byte
	Window Window
}

// auditPage is how many events are read per call.
const auditPage = 4096

// Audit proves the current checkpoint consistent with cfg.Before, then
// scans every event after it: counts per type, release and instance inside
// the window, sequence gaps, signatures and signature events that lack
// their counterpart, and key events or key uses inside the window.
func Audit(ctx context.Context, cfg AuditConfig) (*AuditReport, error) {
	st := cfg.Store
	latest, err := st.LatestCheckpoint(ctx)
	if err != nil {
		return nil, fmt.Errorf("reconcile: latest checkpoint: %w", err)
	}
	after, err := auditlog.OpenCheckpoint(latest.Note, cfg.VerifierKey)
	if err != nil {
		return nil, fmt.Errorf("reconcile: current checkpoint: %w", err)
	}
	var before auditlog.Checkpoint
	if cfg.Before != nil {
		if before, err = auditlog.OpenCheckpoint(cfg.Before, cfg.VerifierKey); err != nil {
			return nil, fmt.Errorf("reconcile: checkpoint before the deploy: %w", err)
		}
	}
	r := &AuditReport{
		Before: info(before), After: info(after),
		EventCounts: map[string]int{}, CountsByRelease: map[string]map[string]int{}, CountsByInstance: map[string]map[string]int{},
		Gaps: []Gap{}, KeyFindings: []KeyFinding{}, ConsistencyProof: []string{},
	}
	if err := r.prove(ctx, st, before, after); err != nil {
		return nil, err
	}
	size, err := st.AuditSize(ctx)
	if err != nil {
		return nil, fmt.Errorf("reconcile: audit size: %w", err)
	}
	r.ScannedFrom, r.ScannedTo = before.Size, size
	if err := r.scan(ctx, st, cfg.Window, before.Size, size); err != nil {
		return nil, err
	}
	return r, nil
}

func info(c auditlog.Checkpoint) CheckpointInfo {
	return CheckpointInfo{Size: c.Size, Root: base64.StdEncoding.EncodeToString(c.Hash[:]), Note: string(c.Note)}
}

func (r *AuditReport) prove(ctx context.Context, st AuditStore, before, after auditlog.Checkpoint) error {
	switch {
	case before.Size > after.Size:
		r.Consistent = false
		return nil
	case before.Size == after.Size:
		r.Consistent = before.Size == 0 || before.Hash == after.Hash
		return nil
	case before.Size == 0:
		r.Consistent = true
		return nil
	}
	p, err := auditlog.ProveConsistency(ctx, st, before.Size, after.Size)
	if err != nil {
		return fmt.Errorf("reconcile: consistency proof %d -> %d: %w", before.Size, after.Size, err)
	}
	for _, h := range p {
		r.ConsistencyProof = append(r.ConsistencyProof, base64.StdEncoding.EncodeToString(h[:]))
	}
	r.Consistent = tlog.CheckTree(p, after.Size, after.Hash, before.Size, before.Hash) == nil
	return nil
}

// CheckConsistencyProof verifies a consistency proof between two signed
// checkpoints offline; the evidence verifier uses it.
func CheckConsistencyProof(beforeNote, afterNote []byte, proof []string, verifierKey string) error {
	before, err := auditlog.OpenCheckpoint(beforeNote, verifierKey)
	if err != nil {
		return fmt.Errorf("checkpoint before: %w", err)
	}
	after, err := auditlog.OpenCheckpoint(afterNote, verifierKey)
	if err != nil {
		return fmt.Errorf("checkpoint after: %w", err)
	}
	var p tlog.TreeProof
	for i, s := range proof {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(b) != tlog.HashSize {
			return fmt.Errorf("consistency proof hash %d is not 32 bytes of base64", i)
		}
		p = append(p, tlog.Hash(b))
	}
	switch {
	case before.Size > after.Size:
		return fmt.Errorf("the log shrank from %d to %d entries", before.Size, after.Size)
	case before.Size == after.Size && before.Hash != after.Hash:
		return fmt.Errorf("two roots for size %d (fork)", before.Size)
	case before.Size == 0 || before.Size == after.Size:
		return nil
	}
	if err := tlog.CheckTree(p, after.Size, after.Hash, before.Size, before.Hash); err != nil {
		return fmt.Errorf("checkpoint %d is not consistent with checkpoint %d: %w", after.Size, before.Size, err)
	}
	return nil
}

// entryDetails is the part of a signature event's entry the scan checks.
type entryDetails struct {
	Details struct {
		ArtifactSHA256 string `json:"artifact_sha256"`
		Compromise     string `json:"compromise_incident"`
	} `json:"details"`
}

func (r *AuditReport) scan(ctx context.Context, st AuditStore, w Window, from, size int64) error {
	sigByIndex := map[int64]store.Signature{}
	for f := from; f < size; {
		page, err := st.Signatures(ctx, f, size, pageSize)
		if err != nil {
			return fmt.Errorf("reconcile: signatures from %d: %w", f, err)
		}
		for _, s := range page {
			sigByIndex[s.AuditIndex] = s
		}
		if len(page) < pageSize {
			break
		}
		f = page[len(page)-1].AuditIndex + 1
	}
	matched := map[int64]bool{}
	next := from
	for next < size {
		evs, err := st.AuditEvents(ctx, next, min(auditPage, size-next))
		if err != nil {
			return fmt.Errorf("reconcile: audit events from %d: %w", next, err)
		}
		if len(evs) == 0 {
			for i := next; i < size; i++ {
				r.Gaps = append(r.Gaps, Gap{Kind: GapMissingEvent, Index: i, Detail: "no audit event at this index"})
			}
			break
		}
		for _, ev := range evs {
			for ; next < ev.Index; next++ {
				r.Gaps = append(r.Gaps, Gap{Kind: GapMissingEvent, Index: next, Detail: "no audit event at this index"})
			}
			next = ev.Index + 1
			if err := auditlog.CheckEntry(ev.Entry); err != nil {
				r.Gaps = append(r.Gaps, Gap{Kind: GapArtifactMismatch, Index: ev.Index, Detail: "entry is not canonical: " + err.Error()})
			}
			if ev.Type == "signature.created" {
				r.checkSignatureEvent(ev, sigByIndex, matched)
			}
			if !w.Contains(ev.Time) {
				continue
			}
			r.count(ev)
			if keyEvent(ev.Type) {
				r.keyEvent(ev)
			}
		}
	}
	for idx, s := range sigByIndex {
		if !matched[idx] {
			r.Gaps = append(r.Gaps, Gap{Kind: GapSignatureWithoutEvent, Index: idx,
				Detail: fmt.Sprintf("signature %s records audit index %d, which holds no signature.created event for it", s.ID, idx)})
		}
	}
	sortGaps(r.Gaps)
	return r.keyUse(ctx, st, w, sigByIndex)
}

func (r *AuditReport) checkSignatureEvent(ev store.AuditEvent, sigs map[int64]store.Signature, matched map[int64]bool) {
	s, ok := sigs[ev.Index]
	id := strings.TrimPrefix(ev.Subject, "signature:")
	if !ok || s.ID != id {
		r.Gaps = append(r.Gaps, Gap{Kind: GapEventWithoutSignature, Index: ev.Index,
			Detail: fmt.Sprintf("event for signature %s has no signature row at this index", id)})
		return
	}
	matched[ev.Index] = true
	var d entryDetails
	if err := json.Unmarshal(ev.Entry, &d); err != nil {
		r.Gaps = append(r.Gaps, Gap{Kind: GapArtifactMismatch, Index: ev.Index, Detail: "entry does not decode: " + err.Error()})
		return
	}
	sum := sha256.Sum256(s.Signature)
	if d.Details.ArtifactSHA256 != "" && d.Details.ArtifactSHA256 != hex.EncodeToString(sum[:]) {
		r.Gaps = append(r.Gaps, Gap{Kind: GapArtifactMismatch, Index: ev.Index,
			Detail: fmt.Sprintf("signature %s: stored artifact's SHA-256 differs from the one its audit event binds", s.ID)})
	}
}

func (r *AuditReport) count(ev store.AuditEvent) {
	r.EventCounts[ev.Type]++
	rel := ev.Release
	if rel == "" {
		rel = "(none)"
	}
	if r.CountsByRelease[rel] == nil {
		r.CountsByRelease[rel] = map[string]int{}
	}
	r.CountsByRelease[rel][ev.Type]++
	inst := ev.Instance
	if inst == "" {
		inst = "(none)"
	}
	if r.CountsByInstance[inst] == nil {
		r.CountsByInstance[inst] = map[string]int{}
	}
	r.CountsByInstance[inst][ev.Type]++
}

// keyEvent reports whether typ is a key lifecycle event (keys.Event*).
func keyEvent(typ string) bool {
	return strings.HasPrefix(typ, "key.") || strings.HasPrefix(typ, "keys.")
}

func (r *AuditReport) keyEvent(ev store.AuditEvent) {
	f := KeyFinding{Index: ev.Index, Type: ev.Type, Subject: ev.Subject, Time: ev.Time}
	var d entryDetails
	_ = json.Unmarshal(ev.Entry, &d) // canonical JSON was checked above
	switch {
	case ev.Type == keys.EventKeysFrozen || ev.Type == keys.EventKeysUnfrozen:
		f.Allowed, f.Detail = true, "the incident key freeze"
	case d.Details.Compromise != "":
		f.Allowed, f.Detail = true, "made under declared compromise of incident "+d.Details.Compromise
	default:
		f.Detail = "key operation during the incident window without a declared compromise"
		r.KeyEventsViolating++
	}
	r.KeyFindings = append(r.KeyFindings, f)
}

// keyUse flags signatures in the window made with a key version that did
// not exist yet or is unknown.
func (r *AuditReport) keyUse(ctx context.Context, ks KeySource, w Window, sigs map[int64]store.Signature) error {
	var inWindow []store.Signature
	for _, s := range sigs {
		if w.Contains(s.SignedAt) {
			inWindow = append(inWindow, s)
		}
	}
	mats := newMaterials(ks)
	for _, s := range inWindow {
		m, err := mats.of(ctx, &s)
		if err != nil {
			return err
		}
		subject := keys.Subject(s.TenantID, s.KeyName, s.KeyVersion)
		var detail string
		switch {
		case m.kv.Version == 0:
			detail = "signature " + s.ID + " names a key version that is not in the store"
		case m.kv.CreatedAt.After(s.SignedAt):
			detail = fmt.Sprintf("signature %s was made at %s, before its key version was created (%s)", s.ID,
				s.SignedAt.Format(time.RFC3339Nano), m.kv.CreatedAt.Format(time.RFC3339Nano))
		default:
			continue
		}
		r.KeyEventsViolating++
		r.KeyFindings = append(r.KeyFindings, KeyFinding{Index: s.AuditIndex, Type: "key.unexpected_use", Subject: subject, Time: s.SignedAt, Detail: detail})
	}
	sortFindings(r.KeyFindings)
	return nil
}

// CheckpointBefore returns the last checkpoint in the history file at path
// (auditlog.HistoryFile in a data dir: one JSON object per line with the
// signing time and the signed note) signed strictly before t. The note is
// returned verbatim; Audit verifies it.
func CheckpointBefore(path string, t time.Time) ([]byte, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s does not exist (no checkpoint was ever signed)", ErrNoCheckpointBefore, path)
	}
	if err != nil {
		return nil, fmt.Errorf("reconcile: checkpoint history: %w", err)
	}
	lines := strings.Split(string(data), "\n")
	// The last element is "" or a record torn by a crash (never stored).
	var found []byte
	for i, l := range lines[:len(lines)-1] {
		var rec struct {
			Time time.Time `json:"time"`
			Note string    `json:"note"`
		}
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			return nil, fmt.Errorf("reconcile: checkpoint history %s line %d: %w", path, i+1, err)
		}
		if rec.Time.Before(t) {
			found = []byte(rec.Note)
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%w: %s has no checkpoint signed before %s", ErrNoCheckpointBefore, path, t.Format(time.RFC3339))
	}
	return found, nil
}

func sortGaps(gs []Gap) {
	slices.SortStableFunc(gs, func(a, b Gap) int { return cmp.Or(cmp.Compare(a.Index, b.Index), cmp.Compare(a.Kind, b.Kind)) })
}

func sortFindings(fs []KeyFinding) {
	slices.SortStableFunc(fs, func(a, b KeyFinding) int { return cmp.Or(cmp.Compare(a.Index, b.Index), cmp.Compare(a.Type, b.Type)) })
}
