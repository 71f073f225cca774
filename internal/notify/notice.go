package notify

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Notice is one rendered notice: exactly what recipients read.
type Notice struct {
	Incident       string    `json:"incident"`
	Phase          Phase     `json:"phase"`
	Tenant         string    `json:"tenant,omitempty"`
	Revision       int       `json:"revision"`
	Classification string    `json:"classification,omitempty"`
	Subject        string    `json:"subject"`
	Body           string    `json:"body"`
	NextUpdateAt   time.Time `json:"next_update_at,omitzero"`
	// Digest is "sha256:<hex>" over the fields above (ComputeDigest).
	Digest string `json:"digest"`
	// Approval is the sign-off, for phases that require one.
	Approval *Approval `json:"approval,omitempty"`
}

// Approval is a sign-off (e.g. legal) on one notice digest.
type Approval struct {
	By     string    `json:"by"`
	At     time.Time `json:"at"`
	Digest string    `json:"digest"`
	Note   string    `json:"note,omitempty"`
}

// RenderOptions choose the notice to render.
type RenderOptions struct {
	Phase Phase
	// Tenant is required for tenant-scoped phases (B, D) and must be
	// empty otherwise.
	Tenant string
	// Revision numbers successive notices of one phase (and tenant),
	// starting at 1; a changed text must carry a new revision.
	Revision int
	// NextUpdateAt is when the next update is promised (required for A–C).
	NextUpdateAt time.Time
}

// Render renders one notice from in. Tenant-scoped notices are rendered
// from that tenant's view and refused (CrossTenantError) if their text
// names another affected tenant.
func (t *Templates) Render(in Input, o RenderOptions) (Notice, error) {
	if !o.Phase.valid() {
		return Notice{}, fmt.Errorf("notify: unknown phase %q", o.Phase)
	}
	if o.Revision < 1 {
		return Notice{}, fmt.Errorf("notify: revision must be ≥ 1, got %d", o.Revision)
	}
	in.Normalize()
	v, err := view(in, o.Phase, o.Tenant, o.Revision, o.NextUpdateAt.UTC())
	if err != nil {
		return Notice{}, err
	}
	tpl := t.phases[o.Phase]
	subject, err := execute(tpl, "subject", v)
	if err != nil {
		return Notice{}, fmt.Errorf("notify: render phase %s subject: %w", o.Phase, err)
	}
	body, err := execute(tpl, "body", v)
	if err != nil {
		return Notice{}, fmt.Errorf("notify: render phase %s body: %w", o.Phase, err)
	}
	n := Notice{Incident: in.Incident.ID, Phase: o.Phase, Tenant: o.Tenant, Revision: o.Revision,
		Classification: in.Incident.Classification, Subject: strings.Join(strings.Fields(subject), " "),
		Body: strings.TrimSpace(body) + "\n", NextUpdateAt: v.NextUpdateAt}
	if o.Phase.TenantScoped() {
		if err := checkTenants(n, in.Impact.Tenants); err != nil {
			return Notice{}, err
		}
	}
	n.Digest = n.ComputeDigest()
	return n, nil
}

// checkTenants refuses a tenant notice that names another tenant by ID or
// name (as a whole word, case-insensitively).
func checkTenants(n Notice, tenants []Tenant) error {
	text := n.Subject + "\n" + n.Body
	for _, o := range tenants {
		if o.ID == n.Tenant {
			continue
		}
		for _, word := range []string{o.ID, o.Name} {
			if strings.TrimSpace(word) == "" {
				continue
			}
			re := regexp.MustCompile(`(?i)(^|[^\pL\pN_])` + regexp.QuoteMeta(word) + `($|[^\pL\pN_])`)
			if re.MatchString(text) {
				return &CrossTenantError{Phase: n.Phase, Tenant: n.Tenant, Other: o.ID, Match: word}
			}
		}
	}
	return nil
}

// ComputeDigest returns "sha256:<hex>" of the canonical JSON of what a
// recipient reads: incident, phase, tenant, revision, subject, body and
// next update time. The approval is not covered (it signs the digest).
func (n Notice) ComputeDigest() string {
	b, _ := json.Marshal(struct {
		Incident string `json:"incident"`
		Phase    Phase  `json:"phase"`
		Tenant   string `json:"tenant"`
		Revision int    `json:"revision"`
		Subject  string `json:"subject"`
		Body     string `json:"body"`
		Next     string `json:"next_update_at"`
	}{n.Incident, n.Phase, n.Tenant, n.Revision, n.Subject, n.Body, formatTime(n.NextUpdateAt)})
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Verify checks that n's Digest matches its content.
func (n Notice) Verify() error {
	if got := n.ComputeDigest(); got != n.Digest {
		return fmt.Errorf("%w: has %s, content is %s", ErrDigestMismatch, n.Digest, got)
	}
	return nil
}

// DeliveryID is the idempotent ID of delivering revision rev of a notice
// to a channel: hex sha256 over the length-prefixed incident, phase,
// tenant, channel and revision. Retries of the same delivery carry it.
func DeliveryID(incident string, phase Phase, tenant, channel string, rev int) string {
	h := sha256.New()
	for _, f := range []string{incident, string(phase), tenant, channel, strconv.Itoa(rev)} {
		var l [8]byte
		binary.BigEndian.PutUint64(l[:], uint64(len(f)))
		h.Write(l[:])
		h.Write([]byte(f))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// DeliveryID is the ID of delivering n to channel.
func (n Notice) DeliveryID(channel string) string {
	return DeliveryID(n.Incident, n.Phase, n.Tenant, channel, n.Revision)
}

// AuditSubject names the notice in audit events: incident/<id>/notice/<phase>[/<tenant>].
func (n Notice) AuditSubject() string {
	s := "incident/" + n.Incident + "/notice/" + string(n.Phase)
	if n.Tenant != "" {
		s += "/" + n.Tenant
	}
	return s
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
