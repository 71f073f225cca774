package notify

import (
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// loadIncident reads the realistic incident of testdata/incident.json.
func loadIncident(t *testing.T) Input {
	t.Helper()
	b, err := os.ReadFile("testdata/incident.json")
	if err != nil {
		t.Fatal(err)
	}
	var in Input
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		t.Fatalf("testdata/incident.json: %v", err)
	}
	return in
}

func defaults(t *testing.T) *Templates {
	t.Helper()
	tpl, err := DefaultTemplates()
	if err != nil {
		t.Fatalf("DefaultTemplates: %v", err)
	}
	return tpl
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden file (go test -update rewrites it)\n--- got ---\n%s\n--- want ---\n%s", path, got, want)
	}
}

func noticeText(n Notice) string {
	return "Subject: " + n.Subject + "\nDigest: " + n.Digest + "\n\n" + n.Body
}

func TestGoldenNotices(t *testing.T) {
	tpl := defaults(t)
	in := loadIncident(t)
	detected := in.Incident.DetectedAt
	tests := []struct {
		name   string
		phase  Phase
		tenant string
		next   time.Time
	}{
		{"phase-a", PhaseInternal, "", detected.Add(30 * time.Minute)},
		{"phase-b-acme", PhaseCustomer, "acme", detected.Add(time.Hour)},
		{"phase-b-globex", PhaseCustomer, "globex", detected.Add(time.Hour)},
		{"phase-c", PhaseRegulator, "", detected.Add(24 * time.Hour)},
		{"phase-d-acme", PhaseRemediation, "acme", time.Time{}},
		{"phase-d-globex", PhaseRemediation, "globex", time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := tpl.Render(in, RenderOptions{Phase: tt.phase, Tenant: tt.tenant, Revision: 1, NextUpdateAt: tt.next})
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			if err := n.Verify(); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(n.Body, "<no value>") || strings.Contains(n.Subject, "<no value>") {
				t.Errorf("rendered an empty value:\n%s", noticeText(n))
			}
			golden(t, tt.name, noticeText(n))
		})
	}
}

func TestGoldenPostmortem(t *testing.T) {
	tpl := defaults(t)
	in := loadIncident(t)
	in.Incident.State = "closed"
	md, err := tpl.Postmortem(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Time to detect | 4.4s", "Time to contain | 5.1s", "Time to restore | 7m37s",
		"Refused (503 + Retry-After): 233", "Replayed: 37",
		"Verification missing in CI for algorithm PS256",
		`Playbook step "replay" failed`, "## Contributing factors",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("postmortem lacks %q", want)
		}
	}
	if strings.Contains(md, "algorithm ES256") {
		t.Error("an attested (valid) ES256 signature seeded a verification action item")
	}
	golden(t, "postmortem.md", md)
}

// A customer or remediation notice never names another tenant, even when
// the other tenant has timeline entries, remediations and a distinctive name.
func TestTenantNoticesNeverNameOtherTenants(t *testing.T) {
	tpl := defaults(t)
	in := loadIncident(t)
	for _, p := range []Phase{PhaseCustomer, PhaseRemediation} {
		for _, self := range in.Impact.Tenants {
			t.Run(string(p)+"/"+self.ID, func(t *testing.T) {
				n, err := tpl.Render(in, RenderOptions{Phase: p, Tenant: self.ID, Revision: 1, NextUpdateAt: in.Incident.DetectedAt.Add(time.Hour)})
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(n.Body, self.Name) {
					t.Errorf("notice for %s does not name its own tenant", self.ID)
				}
				for _, other := range in.Impact.Tenants {
					if other.ID == self.ID {
						continue
					}
					text := strings.ToLower(n.Subject + n.Body)
					for _, w := range []string{other.ID, other.Name} {
						if strings.Contains(text, strings.ToLower(w)) {
							t.Errorf("notice for %s mentions %q", self.ID, w)
						}
					}
					for _, r := range in.Remediations {
						if r.Tenant == other.ID && strings.Contains(text, strings.ToLower(r.Document)) {
							t.Errorf("notice for %s mentions %s's document %s", self.ID, other.ID, r.Document)
						}
					}
				}
			})
		}
	}
}

// Text that names another tenant (here in the incident summary) makes the
// tenant notice fail instead of leaking.
func TestCrossTenantTextRefused(t *testing.T) {
	tpl := defaults(t)
	in := loadIncident(t)
	in.Incident.Summary += " Globex GmbH was affected the most."
	_, err := tpl.Render(in, RenderOptions{Phase: PhaseCustomer, Tenant: "acme", Revision: 1, NextUpdateAt: in.Incident.DetectedAt})
	var ce *CrossTenantError
	if !errors.As(err, &ce) || ce.Other != "globex" || ce.Tenant != "acme" {
		t.Fatalf("Render = %v, want a CrossTenantError naming globex", err)
	}
	// The internal notice may name tenants.
	if _, err := tpl.Render(in, RenderOptions{Phase: PhaseInternal, Revision: 1, NextUpdateAt: in.Incident.DetectedAt}); err != nil {
		t.Fatalf("internal notice: %v", err)
	}
}

func TestRenderInputErrors(t *testing.T) {
	tpl := defaults(t)
	next := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		edit    func(*Input)
		opts    RenderOptions
		field   string // MissingDataError.Field
		wantErr error
	}{
		{"A without next update", nil, RenderOptions{Phase: PhaseInternal, Revision: 1}, "next_update_at", nil},
		{"A without impact summary", func(in *Input) { in.Impact.Summary = "" }, RenderOptions{Phase: PhaseInternal, Revision: 1, NextUpdateAt: next}, "impact.summary", nil},
		{"B without containment", func(in *Input) { in.Containment = nil }, RenderOptions{Phase: PhaseCustomer, Tenant: "acme", Revision: 1, NextUpdateAt: next}, "containment", nil},
		{"C without evidence", func(in *Input) { in.Evidence.Bundle = "" }, RenderOptions{Phase: PhaseRegulator, Revision: 1, NextUpdateAt: next}, "evidence.bundle", nil},
		{"D without proof", func(in *Input) { in.Reconciliation.ProofSummary = "" }, RenderOptions{Phase: PhaseRemediation, Tenant: "acme", Revision: 1}, "reconciliation.proof_summary", nil},
		{"B without tenant", nil, RenderOptions{Phase: PhaseCustomer, Revision: 1, NextUpdateAt: next}, "", ErrTenantRequired},
		{"B unknown tenant", nil, RenderOptions{Phase: PhaseCustomer, Tenant: "umbrella", Revision: 1, NextUpdateAt: next}, "", ErrUnknownTenant},
		{"A with tenant", nil, RenderOptions{Phase: PhaseInternal, Tenant: "acme", Revision: 1, NextUpdateAt: next}, "", ErrTenantRequired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := loadIncident(t)
			if tt.edit != nil {
				tt.edit(&in)
			}
			_, err := tpl.Render(in, tt.opts)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Render = %v, want %v", err, tt.wantErr)
				}
				return
			}
			var me *MissingDataError
			if !errors.As(err, &me) || me.Field != tt.field {
				t.Fatalf("Render = %v, want MissingDataError for %s", err, tt.field)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("error %q does not name %s", err, tt.field)
			}
		})
	}
}

// Operator templates are validated at load; the error names the file and
// the missing or unknown field.
func TestTemplateValidation(t *testing.T) {
	tests := []struct {
		name, file, src string
		want            *regexp.Regexp
	}{
		{"missing required field", "phase-a-internal.tmpl",
			`{{define "subject"}}{{.Incident.ID}}{{end}}{{define "body"}}{{.Incident.ID}} {{.Impact.Summary}} {{ts .NextUpdateAt}}{{end}}`,
			regexp.MustCompile(`phase-a-internal\.tmpl: \.Containment: required field is never used`)},
		{"nested required field missing", "phase-c-regulator.tmpl",
			`{{define "subject"}}x{{end}}{{define "body"}}{{with .Incident}}{{.ID}}{{end}}{{range .Timeline}}{{.Kind}}{{end}}{{.Impact.Documents}}{{range .Plan}}{{end}}{{.Evidence.Bundle}}{{ts .NextUpdateAt}}{{end}}`,
			regexp.MustCompile(`\.Impact\.LegallyBinding: required field is never used`)},
		{"missing body", "phase-b-customer.tmpl", `{{define "subject"}}{{.Tenant.Name}}{{end}}`,
			regexp.MustCompile(`phase-b-customer\.tmpl: \{\{define "body"\}\}: missing definition`)},
		{"unknown field", "phase-d-remediation.tmpl",
			`{{define "subject"}}{{.Tenant.Nmae}}{{end}}{{define "body"}}{{.Incident.ID}}{{.Tenant.ID}}{{range .Remediations}}{{.Document}}{{end}}{{.Reconciliation.ProofSummary}}{{end}}`,
			regexp.MustCompile(`phase-d-remediation\.tmpl.*can't evaluate field Nmae`)},
		{"syntax error", "postmortem.md.tmpl", `{{define "body"}}{{.Incident.ID}{{end}}`,
			regexp.MustCompile(`postmortem\.md\.tmpl: template: postmortem\.md\.tmpl:1: bad character`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, tt.file), []byte(tt.src), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := LoadTemplates(dir)
			var te *TemplateError
			if !errors.As(err, &te) {
				t.Fatalf("LoadTemplates = %v, want a TemplateError", err)
			}
			if !tt.want.MatchString(err.Error()) {
				t.Errorf("error %q does not match %s", err, tt.want)
			}
		})
	}
}

// Equivalent spellings of a required field pass validation, and an
// operator's template overrides the default.
func TestTemplateValidationAcceptsEquivalentForms(t *testing.T) {
	dir := t.TempDir()
	src := `{{define "subject"}}{{$.Incident.ID}}{{end}}{{define "body"}}{{with .Incident}}{{.ID}}{{end}}` +
		`{{template "impact" .Impact}}{{range $i, $a := .Containment}}{{$a.Action}}{{end}}{{$n := .NextUpdateAt}}{{ts $n}}{{end}}` +
		`{{define "impact"}}OPERATOR {{.Summary}}{{end}}`
	if err := os.WriteFile(filepath.Join(dir, "phase-a-internal.tmpl"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	tpl, err := LoadTemplates(dir)
	if err != nil {
		t.Fatalf("LoadTemplates: %v", err)
	}
	in := loadIncident(t)
	n, err := tpl.Render(in, RenderOptions{Phase: PhaseInternal, Revision: 1, NextUpdateAt: in.Incident.DetectedAt})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(n.Body, "OPERATOR RSA-PSS") {
		t.Errorf("operator template not used: %q", n.Body)
	}
	if !strings.HasSuffix(tpl.Sources["phase-b-customer.tmpl"], "(default)") {
		t.Errorf("phase B source = %q, want the default", tpl.Sources["phase-b-customer.tmpl"])
	}
}

func TestDigestAndDeliveryID(t *testing.T) {
	tpl := defaults(t)
	in := loadIncident(t)
	o := RenderOptions{Phase: PhaseCustomer, Tenant: "acme", Revision: 1, NextUpdateAt: in.Incident.DetectedAt.Add(time.Hour)}
	a, err := tpl.Render(in, o)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := tpl.Render(in, o)
	if a.Digest != b.Digest {
		t.Errorf("rendering twice gave digests %s and %s", a.Digest, b.Digest)
	}
	o.Revision = 2
	c, _ := tpl.Render(in, o)
	if c.Digest == a.Digest || c.DeliveryID("x") == a.DeliveryID("x") {
		t.Error("a new revision kept the digest or the delivery ID")
	}
	if a.DeliveryID("mail") == a.DeliveryID("hook") {
		t.Error("two channels share a delivery ID")
	}
	// Length-prefixing: moving a character between fields changes the ID.
	if DeliveryID("INC-1", "B", "ab", "c", 1) == DeliveryID("INC-1", "B", "a", "bc", 1) {
		t.Error("delivery ID fields are ambiguous")
	}
	a.Body += "tampered"
	if err := a.Verify(); !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("Verify after tampering = %v", err)
	}
}
