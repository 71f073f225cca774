package notify

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Metrics are the incident's times, measured from the first bad signature
// (or detection when that is unknown). Unknown durations are -1.
type Metrics struct {
	TimeToDetect  time.Duration
	TimeToContain time.Duration
	TimeToRestore time.Duration
	// Duration is detection to close.
	Duration time.Duration
}

func metrics(in Input) Metrics {
	inc := in.Incident
	from := inc.FirstBadAt
	if from.IsZero() {
		from = inc.DetectedAt
	}
	since := func(a, b time.Time) time.Duration {
		if a.IsZero() || b.IsZero() || b.Before(a) {
			return -1
		}
		return b.Sub(a)
	}
	return Metrics{TimeToDetect: since(from, inc.DetectedAt), TimeToContain: since(from, inc.ContainedAt),
		TimeToRestore: since(from, inc.RestoredAt), Duration: since(inc.DetectedAt, inc.ClosedAt)}
}

// ActionItem is a follow-up seeded from something that failed.
type ActionItem struct {
	Title  string
	Detail string
	// Source says what seeded it (a step, a signal, the reconciliation).
	Source string
}

// failedStates are the playbook step states that seed an action item.
var failedStates = []string{"failed", "aborted", "unavailable"}

// actionItems derives follow-ups from what failed: steps that did not
// succeed, algorithms whose signatures failed verification, detection
// signals no release gate caught, lost or duplicated requests, and an
// audit log that could not be proven consistent.
func actionItems(in Input) []ActionItem {
	var out []ActionItem
	for _, s := range in.Steps {
		if !slices.Contains(failedStates, s.State) {
			continue
		}
		detail := cmp.Or(s.Error, s.Note, "no detail recorded")
		title := fmt.Sprintf("Playbook step %q %s: make it complete unattended or document the manual path", s.ID, s.State)
		if s.State == "unavailable" {
			title = fmt.Sprintf("Playbook step %q is not available in this build: implement it or remove it from the playbook", s.ID)
		}
		out = append(out, ActionItem{Title: title, Detail: detail, Source: "step " + s.ID})
	}
	// Algorithms whose window signatures had to be re-signed or voided
	// (an attested signature verified): the release shipped without an
	// independent verification of them.
	byAlg := map[string]int{}
	for _, r := range in.Remediations {
		if r.Action != Attest {
			byAlg[cmp.Or(r.Algorithm, "unknown")]++
		}
	}
	for _, alg := range sortedKeys(byAlg) {
		out = append(out, ActionItem{
			Title:  fmt.Sprintf("Verification missing in CI for algorithm %s: add sign + independent verify of %s to the release pipeline", alg, alg),
			Detail: fmt.Sprintf("%d %s in the regressive window failed verification", byAlg[alg], plural(byAlg[alg], "signature", "signatures")),
			Source: "reconciliation"})
	}
	seen := map[string]bool{}
	for _, s := range in.Signals {
		key := s.Source + "/" + s.Kind
		if seen[key] || s.Source == "operator" {
			continue
		}
		seen[key] = true
		what := s.Kind
		if s.Algorithm != "" {
			what += " (" + s.Algorithm + ")"
		}
		out = append(out, ActionItem{
			Title:  fmt.Sprintf("Release gate did not catch %s before production: add a pre-release check for it", what),
			Detail: cmp.Or(s.Detail, "detected by "+s.Source), Source: "signal " + s.Source})
	}
	if in.Requests.Lost > 0 {
		out = append(out, ActionItem{Title: fmt.Sprintf("%d accepted %s lost: find where acceptance and persistence diverged",
			in.Requests.Lost, plural(in.Requests.Lost, "request was", "requests were")), Source: "requests"})
	}
	if in.Requests.Duplicates > 0 {
		out = append(out, ActionItem{Title: fmt.Sprintf("%d idempotency %s signed twice: fix idempotent replay",
			in.Requests.Duplicates, plural(in.Requests.Duplicates, "key was", "keys were")), Source: "requests"})
	}
	if !in.Reconciliation.Consistent {
		out = append(out, ActionItem{Title: "Audit log not proven consistent across the incident: investigate before closing",
			Detail: cmp.Or(in.Reconciliation.ProofSummary, "no consistency proof recorded"), Source: "reconciliation"})
	}
	return out
}

// Postmortem renders the postmortem draft (Markdown) from in: timeline,
// detection signals, time to detect/contain/restore, requests refused and
// replayed, reconciliation counts, a contributing-factors section left for
// humans, and action items seeded from what failed.
func (t *Templates) Postmortem(in Input) (string, error) {
	in.Normalize()
	if in.Incident.ID == "" {
		return "", &MissingDataError{Phase: "postmortem", Field: "incident.id"}
	}
	v := &View{PhaseName: "postmortem", Audience: "the organisation", Incident: in.Incident, Impact: in.Impact,
		Containment: in.Containment, Timeline: in.Timeline, Signals: in.Signals, Steps: in.Steps, Requests: in.Requests,
		Remediations: in.Remediations, Plan: plan(in.Remediations), Reconciliation: in.Reconciliation,
		Evidence: in.Evidence, Expectations: in.Expectations, Metrics: metrics(in), ActionItems: actionItems(in)}
	out, err := execute(t.postmortem, "body", v)
	if err != nil {
		return "", fmt.Errorf("notify: render postmortem: %w", err)
	}
	return strings.TrimSpace(out) + "\n", nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
