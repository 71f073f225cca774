package reconcile

import (
	"cmp"
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
	var out []store.Signature
	err := scanWindow(ctx, src, w, fromIndex, func(page []store.Signature) error {
		out = append(out, page...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b store.Signature) int { return cmp.Compare(a.AuditIndex, b.AuditIndex) })
	return out, nil
}

// scanWindow reads the signatures WindowSignatures returns, a store page at
// a time, and hands each page's not yet seen ones to emit, in no
// particular order. emit may keep the slice.
func scanWindow(ctx context.Context, src SignatureSource, w Window, fromIndex int64, emit func([]store.Signature) error) error {
	seen := map[string]struct{}{}
	fresh := func(page []store.Signature, keep func(*store.Signature) bool) error {
		n := 0
		for i := range page {
			if _, dup := seen[page[i].ID]; dup || !keep(&page[i]) {
				continue
			}
			seen[page[i].ID] = struct{}{}
			page[n] = page[i]
			n++
		}
		if n == 0 {
			return nil
		}
		return emit(page[:n:n])
	}
	all := func(*store.Signature) bool { return true }
	for _, rel := range w.Releases {
		after := ""
		for {
			page, err := src.SignaturesByRelease(ctx, rel, time.Time{}, endOfTime, pageSize, after)
			if err != nil {
				return fmt.Errorf("reconcile: signatures of release %s: %w", rel, err)
			}
			full := len(page) == pageSize
			if full {
				after = page[len(page)-1].ID
			}
			if err := fresh(page, all); err != nil {
				return err
			}
			if !full {
				break
			}
		}
	}
	size, err := src.AuditSize(ctx)
	if err != nil {
		return fmt.Errorf("reconcile: audit size: %w", err)
	}
	inWindow := func(s *store.Signature) bool { return w.Contains(s.SignedAt) }
	for from := fromIndex; from < size; {
		page, err := src.Signatures(ctx, from, size, pageSize)
		if err != nil {
			return fmt.Errorf("reconcile: signatures from index %d: %w", from, err)
		}
		full := len(page) == pageSize
		if full {
			from = page[len(page)-1].AuditIndex + 1
		}
		if err := fresh(page, inWindow); err != nil {
			return err
		}
		if !full {
			break
		}
	}
	return nil
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
	// Elapsed covers selecting the signatures from the store and verifying
	// them (the two overlap); PerSecond is Total over Elapsed.
	Elapsed   time.Duration `json:"elapsed_ns"`
	PerSecond float64       `json:"signatures_per_second"`
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

// VerifyWindow selects the window's signatures and classifies them. Reading
// from the store and verifying overlap: each page read is verified on the
// workers while the next one is read.
func VerifyWindow(ctx context.Context, src SignatureSource, w Window, fromIndex int64, cfg VerifyConfig) (*WindowReport, error) {
	start := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p := startPipeline(ctx, src, cfg)
	var pages [][]Verdict
	err := scanWindow(ctx, src, w, fromIndex, func(page []store.Signature) error {
		out := make([]Verdict, len(page))
		pages = append(pages, out)
		return p.add(page, out)
	})
	if err != nil {
		cancel()
		p.wait()
		return nil, err
	}
	if err := p.wait(); err != nil {
		return nil, err
	}
	r := Summarize(slices.Concat(pages...))
	r.Elapsed = time.Since(start)
	r.Workers = workersOf(cfg)
	if s := r.Elapsed.Seconds(); s > 0 {
		r.PerSecond = float64(r.Total) / s
	}
	return r, nil
}
