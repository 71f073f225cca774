package reconcile

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/countersign/countersign/internal/store"
)

// Window is the incident window: the regressive releases and the period
// during which they (or anything else) may have signed badly.
type Window struct {
	// From and To bound the window, [From, To).
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
	// Releases are the regressive releases: every signature they made is
	// verified, whenever it was made.
	Releases []string `json:"releases"`
}

// Contains reports whether t is inside the window.
func (w Window) Contains(t time.Time) bool { return !t.Before(w.From) && t.Before(w.To) }

// SignatureSource lists signatures (store.Store).
type SignatureSource interface {
	KeySource
	Signatures(ctx context.Context, fromIndex, toIndex int64, limit int) ([]store.Signature, error)
	SignaturesByRelease(ctx context.Context, release string, from, to time.Time, limit int, after string) ([]store.Signature, error)
	AuditSize(ctx context.Context) (int64, error)
}

// pageSize is how many signatures are read per store call.
const pageSize = 5000

// endOfTime bounds "whenever" for SignaturesByRelease.
var endOfTime = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// WindowSignatures returns every signature a regressive release made, plus
// every signature of any release signed inside the window, once each,
// ordered by audit index. fromIndex is where the scan by audit index starts:
// the size of the last checkpoint before the regressive deploy (0 to scan
// the whole log).
func WindowSignatures(ctx context.Context, src SignatureSource, w Window, fromIndex int64) ([]store.Signature, error) {
	seen := map[string]bool{}
	var out []store.Signature
	add := func(s store.Signature) {
		if !seen[s.ID] {
			seen[s.ID] = true
			out = append(out, s)
		}
	}
	for _, rel := range w.Releases {
		after := ""
		for {
			page, err := src.SignaturesByRelease(ctx, rel, time.Time{}, endOfTime, pageSize, after)
			if err != nil {
				return nil, fmt.Errorf("reconcile: signatures of release %s: %w", rel, err)
			}
			for _, s := range page {
				add(s)
			}
			if len(page) < pageSize {
				break
			}
			after = page[len(page)-1].ID
		}
	}
	size, err := src.AuditSize(ctx)
	if err != nil {
		return nil, fmt.Errorf("reconcile: audit size: %w", err)
	}
	for from := fromIndex; from < size; {
		page, err := src.Signatures(ctx, from, size, pageSize)
		if err != nil {
			return nil, fmt.Errorf("reconcile: signatures from index %d: %w", from, err)
		}
		for _, s := range page {
			if w.Contains(s.SignedAt) {
				add(s)
			}
		}
		if len(page) < pageSize {
			break
		}
		from = page[len(page)-1].AuditIndex + 1
	}
	slices.SortFunc(out, func(a, b store.Signature) int { return int(a.AuditIndex - b.AuditIndex) })
	return out, nil
}

// TenantRemediation is one tenant's documents that need a remedy.
type TenantRemediation struct {
	TenantID  string    `json:"tenant"`
	Documents []Verdict `json:"documents"`
}

// WindowReport is the outcome of window verification.
type WindowReport struct {
	Total  int           `json:"total"`
	Counts map[Class]int `json:"counts"`
	// Remediation lists, per tenant (sorted), every signature that is not
	// valid, by audit index.
	Remediation []TenantRemediation `json:"remediation"`
	Workers     int                 `json:"workers"`
	Elapsed     time.Duration       `json:"elapsed_ns"`
	PerSecond   float64             `json:"signatures_per_second"`
}

// RemedyCounts counts the proposed remedies.
func (r *WindowReport) RemedyCounts() map[Remedy]int {
	out := map[Remedy]int{}
	for _, t := range r.Remediation {
		for _, d := range t.Documents {
			out[d.Remedy]++
		}
	}
	return out
}

// Summarize builds a WindowReport from verdicts.
func Summarize(vs []Verdict) *WindowReport {
	r := &WindowReport{Total: len(vs), Counts: map[Class]int{}}
	for _, c := range Classes {
		r.Counts[c] = 0
	}
	byTenant := map[string][]Verdict{}
	for _, v := range vs {
		r.Counts[v.Class]++
		if v.Class != ClassValid {
			byTenant[v.TenantID] = append(byTenant[v.TenantID], v)
		}
	}
	for _, t := range slices.Sorted(maps.Keys(byTenant)) {
		docs := byTenant[t]
		slices.SortFunc(docs, func(a, b Verdict) int { return int(a.AuditIndex - b.AuditIndex) })
		r.Remediation = append(r.Remediation, TenantRemediation{TenantID: t, Documents: docs})
	}
	return r
}

// VerifyWindow selects the window's signatures and classifies them.
func VerifyWindow(ctx context.Context, src SignatureSource, w Window, fromIndex int64, cfg VerifyConfig) (*WindowReport, error) {
	sigs, err := WindowSignatures(ctx, src, w, fromIndex)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	vs, err := VerifySignatures(ctx, src, sigs, cfg)
	if err != nil {
		return nil, err
	}
	r := Summarize(vs)
	r.Elapsed = time.Since(start)
	r.Workers = workersOf(cfg)
	if s := r.Elapsed.Seconds(); s > 0 {
		r.PerSecond = float64(r.Total) / s
	}
	return r, nil
}
