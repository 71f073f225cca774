package reconcile

import (
	"context"

	"bytes"
	"encoding/json"
	"fmt"
	"github.com/countersign/countersign/internal/store"
	"maps"
	"slices"
	"time"
)

// Report is the reconciliation report of an incident.
type Report struct {
	Incident    string        `json:"incident,omitempty"`
	GeneratedAt time.Time     `json:"generated_at"`
	Window      Window        `json:"window"`
	Replay      *ReplayReport `json:"replay,omitempty"`
	Audit       *AuditReport  `json:"audit,omitempty"`
	Signatures  *WindowReport `json:"signatures,omitempty"`
}

// Summary is the short form of a Report: the evidence statement's
// predicate and the playbook step's outputs.
type Summary struct {
	Incident         string         `json:"incident,omitempty"`
	WindowFrom       time.Time      `json:"window_from"`
	WindowTo         time.Time      `json:"window_to"`
	Releases         []string       `json:"releases"`
	Replayed         int            `json:"replayed"`
	ReplayFailed     int            `json:"replay_failed"`
	ManualReview     int            `json:"manual_review"`
	LogConsistent    bool           `json:"log_consistent"`
	CheckpointBefore int64          `json:"checkpoint_before"`
	CheckpointAfter  int64          `json:"checkpoint_after"`
	Gaps             int            `json:"gaps"`
	KeyViolations    int            `json:"key_violations"`
	Signatures       int            `json:"signatures"`
	Classes          map[string]int `json:"classes"`
	Remedies         map[string]int `json:"remedies"`
}

// Summary returns r's summary.
func (r *Report) Summary() Summary {
	s := Summary{Incident: r.Incident, WindowFrom: r.Window.From, WindowTo: r.Window.To, Releases: r.Window.Releases,
		Classes: map[string]int{}, Remedies: map[string]int{}}
	if s.Releases == nil {
		s.Releases = []string{}
	}
	if r.Replay != nil {
		s.Replayed, s.ReplayFailed, s.ManualReview = len(r.Replay.Replayed), len(r.Replay.Failed), len(r.Replay.Found.ManualReview)
	}
	if a := r.Audit; a != nil {
		s.LogConsistent, s.CheckpointBefore, s.CheckpointAfter = a.Consistent, a.Before.Size, a.After.Size
		s.Gaps, s.KeyViolations = len(a.Gaps), a.KeyEventsViolating
	}
	if w := r.Signatures; w != nil {
		s.Signatures = w.Total
		for c, n := range w.Counts {
			s.Classes[string(c)] = n
		}
		for m, n := range w.RemedyCounts() {
			s.Remedies[string(m)] = n
		}
	}
	return s
}

// JSON is the report's canonical JSON (indented, newline-terminated).
func (r *Report) JSON() ([]byte, error) {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("reconcile: encode report: %w", err)
	}
	return append(b, '\n'), nil
}

// Markdown renders the report for people.
func (r *Report) Markdown() []byte {
	var b bytes.Buffer
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	title := "Reconciliation report"
	if r.Incident != "" {
		title += " — incident " + r.Incident
	}
	p("# %s\n\nGenerated %s. Window [%s, %s); regressive releases: %v.\n\n", title, r.GeneratedAt.UTC().Format(time.RFC3339),
		r.Window.From.UTC().Format(time.RFC3339), r.Window.To.UTC().Format(time.RFC3339), r.Window.Releases)
	if rp := r.Replay; rp != nil {
		p("## In-flight work\n\n| | count |\n|---|---|\n| replay set | %d |\n| replayed | %d |\n| failed | %d |\n| manual review | %d |\n\n",
			len(rp.Found.Replay), len(rp.Replayed), len(rp.Failed), len(rp.Found.ManualReview))
		for _, it := range rp.Found.ManualReview {
			p("- manual review: job `%s` (tenant %s, message `%s`): %s\n", it.JobID, it.TenantID, it.MessageID, it.Reason)
		}
		for _, f := range rp.Failed {
			p("- replay failed: `%s`: %s\n", f.MessageID, f.Error)
		}
		p("\n")
	}
	if a := r.Audit; a != nil {
		verdict := "consistent"
		if !a.Consistent {
			verdict = "NOT consistent"
		}
		p("## Audit log\n\nCheckpoint %d → %d: %s (proof of %d hashes). Events scanned: [%d, %d).\n\n",
			a.Before.Size, a.After.Size, verdict, len(a.ConsistencyProof), a.ScannedFrom, a.ScannedTo)
		p("| event type in window | count |\n|---|---|\n")
		for _, t := range slices.Sorted(maps.Keys(a.EventCounts)) {
			p("| %s | %d |\n", t, a.EventCounts[t])
		}
		p("\n| release | events |\n|---|---|\n")
		for _, rel := range slices.Sorted(maps.Keys(a.CountsByRelease)) {
			n := 0
			for _, c := range a.CountsByRelease[rel] {
				n += c
			}
			p("| %s | %d |\n", rel, n)
		}
		p("\nGaps: %d. Key events or uses violating the freeze: %d.\n\n", len(a.Gaps), a.KeyEventsViolating)
		for _, g := range a.Gaps {
			p("- gap at %d (%s): %s\n", g.Index, g.Kind, g.Detail)
		}
		for _, f := range a.KeyFindings {
			state := "VIOLATION"
			if f.Allowed {
				state = "allowed"
			}
			p("- key %s at %d (%s, %s): %s\n", f.Type, f.Index, f.Subject, state, f.Detail)
		}
		p("\n")
	}
	if w := r.Signatures; w != nil {
		p("## Window verification\n\n%d signatures verified.\n\n| class | count |\n|---|---|\n", w.Total)
		for _, c := range Classes {
			p("| %s | %d |\n", c, w.Counts[c])
		}
		for _, t := range w.Remediation {
			p("\n### Tenant %s\n\n| signature | document | class | remedy | why |\n|---|---|---|---|---|\n", t.TenantID)
			for _, d := range t.Documents {
				p("| %s | %s | %s | %s | %s; %s |\n", d.SignatureID, d.DocumentID, d.Class, d.Remedy, d.Reason, d.RemedyReason)
			}
		}
	}
	return b.Bytes()
}

// Store is what Run reads (store.Store).
type Store interface {
	AuditStore
	SignaturesByRelease(ctx context.Context, release string, from, to time.Time, limit int, after string) ([]store.Signature, error)
}

// Config configures Run.
type Config struct {
	Store       Store
	VerifierKey string
	// Before is the last checkpoint before the regressive deploy
	// (CheckpointBefore); nil means the whole log.
	Before   []byte
	Window   Window
	Incident string
	Verify   VerifyConfig
	// Replay, if set, is the replay step's report, included as is.
	Replay *ReplayReport
	Now    func() time.Time
}

// Run performs audit forensics and window verification and returns the
// report (the playbook's reconcile step).
func Run(ctx context.Context, cfg Config) (*Report, error) {
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	a, err := Audit(ctx, AuditConfig{Store: cfg.Store, VerifierKey: cfg.VerifierKey, Before: cfg.Before, Window: cfg.Window})
	if err != nil {
		return nil, err
	}
	wr, err := VerifyWindow(ctx, cfg.Store, cfg.Window, a.Before.Size, cfg.Verify)
	if err != nil {
		return nil, err
	}
	return &Report{Incident: cfg.Incident, GeneratedAt: now().UTC(), Window: cfg.Window, Replay: cfg.Replay, Audit: a, Signatures: wr}, nil
}
