package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// DefaultPagerDutyURL is the Events API v2 endpoint.
const DefaultPagerDutyURL = "https://events.pagerduty.com/v2/enqueue"

// PagerDutyConfig configures a PagerDuty Events API v2 channel.
type PagerDutyConfig struct {
	Name       string
	URL        string // default DefaultPagerDutyURL
	RoutingKey Secret // the integration key
	Retry      Retry
	Client     *http.Client
}

// PagerDutyEvent is an Events API v2 event.
type PagerDutyEvent struct {
	RoutingKey  string           `json:"routing_key"`
	EventAction string           `json:"event_action"` // trigger
	DedupKey    string           `json:"dedup_key"`
	Payload     PagerDutyPayload `json:"payload"`
	Client      string           `json:"client,omitempty"`
}

// PagerDutyPayload is the event's payload.
type PagerDutyPayload struct {
	Summary       string         `json:"summary"` // at most 1024 characters
	Source        string         `json:"source"`
	Severity      string         `json:"severity"` // critical | error | warning | info
	Timestamp     string         `json:"timestamp,omitempty"`
	Component     string         `json:"component,omitempty"`
	Group         string         `json:"group,omitempty"`
	Class         string         `json:"class,omitempty"`
	CustomDetails map[string]any `json:"custom_details,omitempty"`
}

type pagerDuty struct {
	cfg PagerDutyConfig
	p   poster
}

// NewPagerDuty returns the PagerDuty Events API v2 channel. Every notice of
// an incident triggers with the same dedup_key, so PagerDuty keeps one
// alert per incident and adds each notice to its log; the delivery ID is
// in custom_details.
func NewPagerDuty(cfg PagerDutyConfig) (Channel, error) {
	if cfg.Name == "" || cfg.RoutingKey.Empty() {
		return nil, fmt.Errorf("%w: pagerduty channel needs a name and a routing key", ErrConfig)
	}
	if cfg.URL == "" {
		cfg.URL = DefaultPagerDutyURL
	}
	return &pagerDuty{cfg: cfg, p: poster{client: cfg.Client, retry: cfg.Retry}}, nil
}

func (p *pagerDuty) Name() string { return p.cfg.Name }
func (p *pagerDuty) Kind() string { return "pagerduty" }

// PagerDutyDedupKey is the alert key of an incident's notices.
func PagerDutyDedupKey(incident string) string { return "countersign/" + incident }

func (p *pagerDuty) Deliver(ctx context.Context, d Delivery) (Receipt, error) {
	n := d.Notice
	severity := "info"
	if n.Phase == PhaseInternal {
		severity = "critical"
	}
	details := map[string]any{"incident": n.Incident, "phase": string(n.Phase), "revision": n.Revision,
		"delivery_id": d.ID, "digest": n.Digest, "body": n.Body}
	if n.Tenant != "" {
		details["tenant"] = n.Tenant
	}
	if !n.NextUpdateAt.IsZero() {
		details["next_update_at"] = n.NextUpdateAt.UTC().Format(time.RFC3339)
	}
	ev := PagerDutyEvent{RoutingKey: string(p.cfg.RoutingKey.Reveal()), EventAction: "trigger",
		DedupKey: PagerDutyDedupKey(n.Incident), Client: "Countersign",
		Payload: PagerDutyPayload{Summary: truncate(n.Subject, 1024), Source: "countersign", Severity: severity,
			Timestamp: d.SentAt.UTC().Format(time.RFC3339), Component: "signing", Group: n.Incident,
			Class: n.Classification, CustomDetails: details}}
	body, err := json.Marshal(ev)
	if err != nil {
		return Receipt{}, err
	}
	attempts, answer, err := p.p.post(ctx, p.cfg.URL, body, nil)
	if err != nil {
		return Receipt{Attempts: attempts}, fmt.Errorf("pagerduty %s: %w", p.cfg.Name, err)
	}
	var resp struct {
		Status   string `json:"status"`
		DedupKey string `json:"dedup_key"`
	}
	if err := json.Unmarshal(answer, &resp); err != nil || resp.Status != "success" {
		return Receipt{Attempts: attempts}, &PermanentError{Err: fmt.Errorf("pagerduty %s: unexpected answer: %s", p.cfg.Name, snippet(answer))}
	}
	return Receipt{Attempts: attempts, Detail: "dedup_key " + resp.DedupKey}, nil
}
