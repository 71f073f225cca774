package notify

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Phase is one of the four notice phases of an incident.
type Phase string

// The phases, in the order they are due.
const (
	PhaseInternal    Phase = "A" // responders and management, within minutes
	PhaseCustomer    Phase = "B" // each affected tenant, within an hour
	PhaseRegulator   Phase = "C" // regulators and partners, within 4–24 h
	PhaseRemediation Phase = "D" // per tenant remediation report, within 24–72 h
)

// Phases lists every phase in order.
var Phases = []Phase{PhaseInternal, PhaseCustomer, PhaseRegulator, PhaseRemediation}

type phaseSpec struct {
	name     string // short name: internal, customer, ...
	audience string
	file     string // template file name in templates/
	// tenant: one notice per affected tenant, rendered from that tenant's view.
	tenant bool
	// nextUpdate is the default interval to the next update (0: none due).
	nextUpdate time.Duration
	// fields every template of the phase must use (paths in View).
	fields []string
	// data are the input fields a notice of this phase needs.
	data []dataCheck
}

type dataCheck struct {
	field string // JSON path in the input model
	empty func(v *View) bool
}

var (
	needIncidentID = dataCheck{"incident.id", func(v *View) bool { return v.Incident.ID == "" }}
	needNextUpdate = dataCheck{"next_update_at", func(v *View) bool { return v.NextUpdateAt.IsZero() }}
	needContainmnt = dataCheck{"containment", func(v *View) bool { return len(v.Containment) == 0 }}
)

var phaseSpecs = map[Phase]phaseSpec{
	PhaseInternal: {name: "internal", audience: "incident responders and management", file: "phase-a-internal.tmpl",
		nextUpdate: 30 * time.Minute,
		fields:     []string{"Incident.ID", "Impact.Summary", "Containment", "NextUpdateAt"},
		data: []dataCheck{needIncidentID, needNextUpdate, needContainmnt,
			{"impact.summary", func(v *View) bool { return v.Impact.Summary == "" }}}},
	PhaseCustomer: {name: "customer", audience: "the affected tenant", file: "phase-b-customer.tmpl", tenant: true,
		nextUpdate: time.Hour,
		fields:     []string{"Incident.ID", "Incident.Summary", "Containment", "Tenant", "NextUpdateAt"},
		data: []dataCheck{needIncidentID, needNextUpdate, needContainmnt,
			{"incident.summary", func(v *View) bool { return v.Incident.Summary == "" }}}},
	PhaseRegulator: {name: "regulator", audience: "regulators and partners", file: "phase-c-regulator.tmpl",
		nextUpdate: 24 * time.Hour,
		fields:     []string{"Incident.ID", "Timeline", "Impact.LegallyBinding", "Plan", "Evidence.Bundle", "NextUpdateAt"},
		data: []dataCheck{needIncidentID, needNextUpdate,
			{"timeline", func(v *View) bool { return len(v.Timeline) == 0 }},
			{"evidence.bundle", func(v *View) bool { return v.Evidence.Bundle == "" }}}},
	PhaseRemediation: {name: "remediation", audience: "the affected tenant", file: "phase-d-remediation.tmpl", tenant: true,
		fields: []string{"Incident.ID", "Tenant", "Remediations", "Reconciliation.ProofSummary"},
		data: []dataCheck{needIncidentID,
			{"remediations (for this tenant)", func(v *View) bool { return len(v.Remediations) == 0 }},
			{"reconciliation.proof_summary", func(v *View) bool { return v.Reconciliation.ProofSummary == "" }}}},
}

// postmortemSpec is the postmortem template's contract.
var postmortemSpec = phaseSpec{name: "postmortem", file: "postmortem.md.tmpl",
	fields: []string{"Incident.ID", "Timeline", "Signals", "Metrics", "Requests", "Reconciliation", "ActionItems"}}

// ParsePhase accepts "A".."D" or a phase name ("internal", "customer", ...).
func ParsePhase(s string) (Phase, error) {
	for _, p := range Phases {
		if strings.EqualFold(s, string(p)) || strings.EqualFold(s, phaseSpecs[p].name) {
			return p, nil
		}
	}
	return "", fmt.Errorf("notify: unknown phase %q (want A|B|C|D or internal|customer|regulator|remediation)", s)
}

// Name is the phase's short name (internal, customer, regulator, remediation).
func (p Phase) Name() string { return phaseSpecs[p].name }

// TenantScoped reports whether the phase sends one notice per affected tenant.
func (p Phase) TenantScoped() bool { return phaseSpecs[p].tenant }

// DefaultNextUpdate is the phase's default interval to the next update
// (zero when no further update is due).
func (p Phase) DefaultNextUpdate() time.Duration { return phaseSpecs[p].nextUpdate }

func (p Phase) valid() bool { _, ok := phaseSpecs[p]; return ok }

// View is what a template renders: the input as one audience may see it.
// For tenant-scoped phases it holds only that tenant's data.
type View struct {
	Phase        Phase
	PhaseName    string
	Audience     string
	Revision     int
	NextUpdateAt time.Time

	Incident       Incident
	Impact         Impact
	Tenant         Tenant // zero outside tenant-scoped phases
	Containment    []Action
	Timeline       []Entry
	Signals        []Signal
	Steps          []Step
	Requests       Requests
	Remediations   []Remediation
	Plan           []PlanLine
	Reconciliation Reconciliation
	Evidence       Evidence
	Expectations   []string

	// Metrics and ActionItems are derived (postmortem.go).
	Metrics     Metrics
	ActionItems []ActionItem
}

// view builds the view of in for phase p (and tenant, for tenant-scoped
// phases). in must be normalized.
func view(in Input, p Phase, tenant string, revision int, next time.Time) (*View, error) {
	spec := phaseSpecs[p]
	v := &View{Phase: p, PhaseName: spec.name, Audience: spec.audience, Revision: revision, NextUpdateAt: next,
		Incident: in.Incident, Impact: in.Impact, Containment: in.Containment, Timeline: in.Timeline,
		Signals: in.Signals, Steps: in.Steps, Requests: in.Requests, Remediations: in.Remediations,
		Reconciliation: in.Reconciliation, Evidence: in.Evidence, Expectations: in.Expectations}
	if spec.tenant {
		if tenant == "" {
			return nil, fmt.Errorf("%w: phase %s is sent per tenant", ErrTenantRequired, p)
		}
		t, ok := in.Tenant(tenant)
		if !ok {
			return nil, fmt.Errorf("%w: %q is not among the incident's affected tenants", ErrUnknownTenant, tenant)
		}
		// Only this tenant's data reaches the template: other tenants,
		// internal signals, steps, global counts and the evidence bundle
		// (which holds every tenant's data) are left out.
		v.Tenant = t
		v.Impact = Impact{Tenants: []Tenant{t}, Documents: t.Documents, LegallyBinding: t.LegallyBinding,
			WindowFrom: in.Impact.WindowFrom, WindowTo: in.Impact.WindowTo}
		v.Timeline = slices.DeleteFunc(slices.Clone(in.Timeline), func(e Entry) bool { return e.Tenant != "" && e.Tenant != tenant })
		v.Remediations = slices.DeleteFunc(slices.Clone(in.Remediations), func(r Remediation) bool { return r.Tenant != tenant })
		v.Signals, v.Steps, v.Evidence = nil, nil, Evidence{}
		v.Requests = Requests{Refused: t.Refused}
		v.Reconciliation = Reconciliation{Invalid: len(v.Remediations), Consistent: in.Reconciliation.Consistent,
			ProofSummary: in.Reconciliation.ProofSummary}
	} else if tenant != "" {
		return nil, fmt.Errorf("%w: phase %s is not sent per tenant (got tenant %q)", ErrTenantRequired, p, tenant)
	}
	v.Plan = plan(v.Remediations)
	v.Metrics = metrics(in)
	if !spec.tenant {
		v.ActionItems = actionItems(in)
	}
	for _, c := range spec.data {
		if c.empty(v) {
			return nil, &MissingDataError{Phase: p, Field: c.field}
		}
	}
	return v, nil
}
