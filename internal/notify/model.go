package notify

import (
	"cmp"
	"slices"
	"time"
)

// Input is everything the notice and postmortem templates can render. The
// control plane fills it from its incident, the playbook run's status and
// the reconciliation report; `countersign notify preview --incident-file`
// reads it as JSON (docs/notify.md documents every field).
type Input struct {
	Incident Incident `json:"incident"`
	Impact   Impact   `json:"impact"`
	// Containment lists what was done to stop the damage, in order.
	Containment []Action `json:"containment,omitempty"`
	// Timeline is what happened, in any order (views sort it by time).
	Timeline []Entry `json:"timeline,omitempty"`
	// Signals are the detection signals (probe failures, drift alerts).
	Signals []Signal `json:"signals,omitempty"`
	// Steps are the playbook run's steps (from playbook.Status).
	Steps          []Step         `json:"steps,omitempty"`
	Requests       Requests       `json:"requests"`
	Remediations   []Remediation  `json:"remediations,omitempty"`
	Reconciliation Reconciliation `json:"reconciliation"`
	Evidence       Evidence       `json:"evidence"`
	// Expectations tell customers what to expect next (phase B), one
	// sentence each; the default template adds the retry guidance.
	Expectations []string `json:"expectations,omitempty"`
}

// Incident is the notice's view of the control plane's incident.
type Incident struct {
	ID             string `json:"id"`
	Classification string `json:"classification"` // signature-corruption | availability | performance
	State          string `json:"state"`          // open | contained | restored | closed
	Release        string `json:"release"`        // the regressive release
	// LastGoodRelease is the release rolled back to.
	LastGoodRelease string    `json:"last_good_release,omitempty"`
	Pool            string    `json:"pool,omitempty"`
	Commander       string    `json:"commander,omitempty"`
	Summary         string    `json:"summary"`
	FirstBadAt      time.Time `json:"first_bad_at,omitzero"`
	DetectedAt      time.Time `json:"detected_at"`
	ContainedAt     time.Time `json:"contained_at,omitzero"`
	RestoredAt      time.Time `json:"restored_at,omitzero"`
	ClosedAt        time.Time `json:"closed_at,omitzero"`
	RunID           string    `json:"run_id,omitempty"`
}

// Impact is who and what the incident touched.
type Impact struct {
	// Summary is one or two sentences for internal readers (phase A).
	Summary string   `json:"summary"`
	Tenants []Tenant `json:"tenants,omitempty"`
	// Documents and LegallyBinding are totals over Tenants; Normalize
	// computes them when they are zero.
	Documents      int       `json:"documents"`
	LegallyBinding int       `json:"legally_binding"`
	WindowFrom     time.Time `json:"window_from,omitzero"`
	WindowTo       time.Time `json:"window_to,omitzero"`
}

// Tenant is one affected tenant.
type Tenant struct {
	ID             string `json:"id"`
	Name           string `json:"name"`
	Documents      int    `json:"documents"`
	LegallyBinding int    `json:"legally_binding"`
	// Refused counts this tenant's requests refused with 503 while the
	// gate was closed (safe to retry with the same Idempotency-Key).
	Refused int `json:"refused,omitempty"`
}

// Action is one containment or recovery action.
type Action struct {
	Time   time.Time `json:"time"`
	Action string    `json:"action"`
	Detail string    `json:"detail,omitempty"`
}

// Entry is one timeline entry. An entry with a Tenant is shown only in
// that tenant's view and in internal and regulator notices.
type Entry struct {
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"`
	Subject string    `json:"subject,omitempty"`
	Detail  string    `json:"detail,omitempty"`
	Tenant  string    `json:"tenant,omitempty"`
}

// Signal is one detection signal.
type Signal struct {
	Time   time.Time `json:"time"`
	Source string    `json:"source"` // probe | drift | operator | ...
	Kind   string    `json:"kind"`   // invalid-signature | metadata-drift | hsm-timeout | ...
	Detail string    `json:"detail,omitempty"`
	// Algorithm is the signature algorithm involved, when known.
	Algorithm string `json:"algorithm,omitempty"`
}

// Step is one playbook step, as playbook.StepStatus reports it.
type Step struct {
	ID         string    `json:"id"`
	State      string    `json:"state"` // succeeded | failed | aborted | skipped | unavailable | ...
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	Error      string    `json:"error,omitempty"`
	Note       string    `json:"note,omitempty"`
}

// Requests counts client requests during the incident.
type Requests struct {
	Sent       int `json:"sent"`
	Accepted   int `json:"accepted"`
	Refused    int `json:"refused"`  // 503 + Retry-After at the gate
	Replayed   int `json:"replayed"` // partial work replayed idempotently
	Lost       int `json:"lost"`
	Duplicates int `json:"duplicates"`
}

// RemediationAction is what happens to one affected document (DESIGN §1.3).
type RemediationAction string

// The remediation actions; signatures are never rewritten.
const (
	ReSign         RemediationAction = "re-sign"
	Attest         RemediationAction = "attest"
	VoidAndReissue RemediationAction = "void-and-reissue"
)

// Remediation is the remediation of one affected document.
type Remediation struct {
	Tenant         string            `json:"tenant"`
	Document       string            `json:"document"`
	Signature      string            `json:"signature,omitempty"`
	Algorithm      string            `json:"algorithm,omitempty"`
	Release        string            `json:"release,omitempty"`
	SignedAt       time.Time         `json:"signed_at,omitzero"`
	LegallyBinding bool              `json:"legally_binding"`
	Finding        string            `json:"finding"` // e.g. "signature does not verify"
	Action         RemediationAction `json:"action"`
	Status         string            `json:"status,omitempty"` // planned | done
}

// Reconciliation summarises the reconciliation report.
type Reconciliation struct {
	Verified int `json:"verified"` // window signatures that verified
	Invalid  int `json:"invalid"`  // window signatures that did not
	Replayed int `json:"replayed"`
	// Consistent is the audit log's pre→post consistency proof result.
	Consistent bool `json:"consistent"`
	// ProofSummary is one line, e.g. "checkpoint 1207 → 1893 consistent (RFC 6962)".
	ProofSummary string `json:"proof_summary"`
	Report       string `json:"report,omitempty"` // the signed report's reference
}

// Evidence references the incident's evidence bundle.
type Evidence struct {
	Bundle     string `json:"bundle"` // path or URI
	Digest     string `json:"digest,omitempty"`
	Checkpoint string `json:"checkpoint,omitempty"`
}

// Normalize fills totals from the tenants and sorts lists by time (and
// tenants by ID), so every rendering of the same input is the same.
func (in *Input) Normalize() {
	if in.Impact.Documents == 0 && in.Impact.LegallyBinding == 0 {
		for _, t := range in.Impact.Tenants {
			in.Impact.Documents += t.Documents
			in.Impact.LegallyBinding += t.LegallyBinding
		}
	}
	slices.SortStableFunc(in.Impact.Tenants, func(a, b Tenant) int { return cmp.Compare(a.ID, b.ID) })
	slices.SortStableFunc(in.Timeline, func(a, b Entry) int { return a.Time.Compare(b.Time) })
	slices.SortStableFunc(in.Containment, func(a, b Action) int { return a.Time.Compare(b.Time) })
	slices.SortStableFunc(in.Signals, func(a, b Signal) int { return a.Time.Compare(b.Time) })
	slices.SortStableFunc(in.Remediations, func(a, b Remediation) int {
		return cmp.Or(cmp.Compare(a.Tenant, b.Tenant), cmp.Compare(a.Document, b.Document))
	})
}

// Tenant returns the affected tenant with id.
func (in *Input) Tenant(id string) (Tenant, bool) {
	for _, t := range in.Impact.Tenants {
		if t.ID == id {
			return t, true
		}
	}
	return Tenant{}, false
}

// PlanLine counts the documents that get one remediation action.
type PlanLine struct {
	Action         RemediationAction
	Documents      int
	LegallyBinding int
}

// plan counts remediations per action, in a fixed order.
func plan(rs []Remediation) []PlanLine {
	var out []PlanLine
	for _, a := range []RemediationAction{ReSign, Attest, VoidAndReissue} {
		l := PlanLine{Action: a}
		for _, r := range rs {
			if r.Action == a {
				l.Documents++
				if r.LegallyBinding {
					l.LegallyBinding++
				}
			}
		}
		if l.Documents > 0 {
			out = append(out, l)
		}
	}
	return out
}
