package notify

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// WebhookPayload is the JSON body of the generic webhook (docs/notify.md).
type WebhookPayload struct {
	Type         string    `json:"type"` // always "countersign.notice"
	DeliveryID   string    `json:"delivery_id"`
	Incident     string    `json:"incident"`
	Phase        Phase     `json:"phase"`
	PhaseName    string    `json:"phase_name"`
	Tenant       string    `json:"tenant,omitempty"`
	Revision     int       `json:"revision"`
	Subject      string    `json:"subject"`
	Body         string    `json:"body"`
	Digest       string    `json:"digest"`
	NextUpdateAt time.Time `json:"next_update_at,omitzero"`
	SentAt       time.Time `json:"sent_at"`
}

// Webhook headers, as in the Standard Webhooks specification: the receiver
// de-duplicates on webhook-id (the delivery ID, the same on every retry)
// and checks webhook-signature = "v1," + base64(HMAC-SHA256(key,
// id + "." + timestamp + "." + body)).
const (
	HeaderWebhookID        = "Webhook-Id"
	HeaderWebhookTimestamp = "Webhook-Timestamp"
	HeaderWebhookSignature = "Webhook-Signature"
)

// WebhookConfig configures a generic webhook channel.
type WebhookConfig struct {
	Name string
	URL  string
	// Secret is the HMAC key; a "whsec_" prefix means the rest is base64.
	Secret Secret
	Retry  Retry
	Client *http.Client
	Now    func() time.Time // signing timestamp; default time.Now
}

type webhook struct {
	cfg WebhookConfig
	key []byte
	p   poster
}

// NewWebhook returns the generic webhook channel.
func NewWebhook(cfg WebhookConfig) (Channel, error) {
	if cfg.Name == "" || cfg.URL == "" {
		return nil, fmt.Errorf("%w: webhook needs a name and a url", ErrConfig)
	}
	if cfg.Secret.Empty() {
		return nil, fmt.Errorf("%w: webhook %s needs a signing secret", ErrConfig, cfg.Name)
	}
	key, err := WebhookKey(cfg.Secret)
	if err != nil {
		return nil, fmt.Errorf("%w: webhook %s: %v", ErrConfig, cfg.Name, err)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &webhook{cfg: cfg, key: key, p: poster{client: cfg.Client, retry: cfg.Retry}}, nil
}

// WebhookKey returns the HMAC key of a webhook secret.
func WebhookKey(s Secret) ([]byte, error) {
	v := string(s.Reveal())
	if rest, ok := strings.CutPrefix(v, "whsec_"); ok {
		return base64.StdEncoding.DecodeString(rest)
	}
	return []byte(v), nil
}

// SignWebhook returns the webhook-signature value for id, ts and body.
func SignWebhook(key []byte, id string, ts int64, body []byte) string {
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "%s.%d.", id, ts)
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

func (w *webhook) Name() string { return w.cfg.Name }
func (w *webhook) Kind() string { return "webhook" }

func (w *webhook) Deliver(ctx context.Context, d Delivery) (Receipt, error) {
	n := d.Notice
	body, err := json.Marshal(WebhookPayload{Type: "countersign.notice", DeliveryID: d.ID, Incident: n.Incident,
		Phase: n.Phase, PhaseName: n.Phase.Name(), Tenant: n.Tenant, Revision: n.Revision, Subject: n.Subject,
		Body: n.Body, Digest: n.Digest, NextUpdateAt: n.NextUpdateAt, SentAt: d.SentAt.UTC()})
	if err != nil {
		return Receipt{}, err
	}
	attempts, _, err := w.p.post(ctx, w.cfg.URL, body, func(h http.Header) {
		ts := w.cfg.Now().Unix()
		h.Set(HeaderWebhookID, d.ID)
		h.Set(HeaderWebhookTimestamp, strconv.FormatInt(ts, 10))
		h.Set(HeaderWebhookSignature, SignWebhook(w.key, d.ID, ts, body))
		h.Set("Idempotency-Key", d.ID)
	})
	if err != nil {
		return Receipt{Attempts: attempts}, fmt.Errorf("webhook %s: %w", w.cfg.Name, err)
	}
	return Receipt{Attempts: attempts}, nil
}
