package notify

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	mail "github.com/wneessen/go-mail"
)

// SMTP TLS policies.
const (
	SMTPTLSMandatory     = "mandatory"     // STARTTLS required (default)
	SMTPTLSOpportunistic = "opportunistic" // STARTTLS when offered
	SMTPTLSNone          = "none"          // plain text: only for a relay on the same host
)

// SMTPConfig configures an SMTP email channel.
type SMTPConfig struct {
	Name     string
	Host     string
	Port     int    // default 587
	TLS      string // mandatory (default) | opportunistic | none
	Username string // empty: no authentication
	Password Secret
	From     string
	// To receives notices that are not tenant-scoped (phases A and C).
	To []string
	// TenantTo receives a tenant's notices (phases B and D); a tenant
	// without recipients here gets no email from this channel.
	TenantTo map[string][]string
	Timeout  time.Duration // default 30s
	Retry    Retry
}

type smtpChannel struct {
	cfg    SMTPConfig
	domain string
}

// NewSMTP returns the SMTP channel. Each message carries
// Message-ID <delivery-id@from-domain>, so a retried delivery can be
// recognised by the receiving system, and X-Countersign-* headers with the
// incident, phase, revision and digest.
func NewSMTP(cfg SMTPConfig) (Channel, error) {
	if cfg.Name == "" || cfg.Host == "" || cfg.From == "" {
		return nil, fmt.Errorf("%w: smtp channel needs a name, a host and a from address", ErrConfig)
	}
	if len(cfg.To) == 0 && len(cfg.TenantTo) == 0 {
		return nil, fmt.Errorf("%w: smtp channel %s has no recipients (to or tenant_to)", ErrConfig, cfg.Name)
	}
	switch cfg.TLS {
	case "":
		cfg.TLS = SMTPTLSMandatory
	case SMTPTLSMandatory, SMTPTLSOpportunistic, SMTPTLSNone:
	default:
		return nil, fmt.Errorf("%w: smtp channel %s: tls %q (want mandatory|opportunistic|none)", ErrConfig, cfg.Name, cfg.TLS)
	}
	if cfg.Port == 0 {
		cfg.Port = 587
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Username != "" && cfg.Password.Empty() {
		return nil, fmt.Errorf("%w: smtp channel %s: username without password", ErrConfig, cfg.Name)
	}
	_, domain, ok := strings.Cut(cfg.From, "@")
	if !ok || domain == "" {
		return nil, fmt.Errorf("%w: smtp channel %s: from %q is not an address", ErrConfig, cfg.Name, cfg.From)
	}
	return &smtpChannel{cfg: cfg, domain: strings.TrimSuffix(domain, ">")}, nil
}

func (s *smtpChannel) Name() string { return s.cfg.Name }
func (s *smtpChannel) Kind() string { return "smtp" }

func (s *smtpChannel) recipients(n Notice) []string {
	if n.Tenant != "" {
		return s.cfg.TenantTo[n.Tenant]
	}
	return s.cfg.To
}

// Accepts reports whether the channel has recipients for n.
func (s *smtpChannel) Accepts(n Notice) bool { return len(s.recipients(n)) > 0 }

func (s *smtpChannel) message(d Delivery) (*mail.Msg, error) {
	n := d.Notice
	m := mail.NewMsg()
	if err := m.From(s.cfg.From); err != nil {
		return nil, &PermanentError{Err: err}
	}
	if err := m.To(s.recipients(n)...); err != nil {
		return nil, &PermanentError{Err: err}
	}
	m.Subject(n.Subject)
	m.SetMessageIDWithValue(d.ID + "@" + s.domain)
	m.SetDateWithValue(d.SentAt)
	m.SetGenHeader("X-Countersign-Delivery", d.ID)
	m.SetGenHeader("X-Countersign-Incident", n.Incident)
	m.SetGenHeader("X-Countersign-Phase", string(n.Phase))
	m.SetGenHeader("X-Countersign-Revision", fmt.Sprint(n.Revision))
	m.SetGenHeader("X-Countersign-Digest", n.Digest)
	m.SetGenHeader(mail.Header("Auto-Submitted"), "auto-generated")
	m.SetBodyString(mail.TypeTextPlain, n.Body)
	return m, nil
}

func (s *smtpChannel) client() (*mail.Client, error) {
	opts := []mail.Option{mail.WithPort(s.cfg.Port), mail.WithTimeout(s.cfg.Timeout)}
	switch s.cfg.TLS {
	case SMTPTLSMandatory:
		opts = append(opts, mail.WithTLSPortPolicy(mail.TLSMandatory))
	case SMTPTLSOpportunistic:
		opts = append(opts, mail.WithTLSPortPolicy(mail.TLSOpportunistic))
	case SMTPTLSNone:
		opts = append(opts, mail.WithTLSPolicy(mail.NoTLS))
	}
	if s.cfg.Username != "" {
		auth := mail.SMTPAuthPlain
		if s.cfg.TLS == SMTPTLSNone {
			auth = mail.SMTPAuthPlainNoEnc
		}
		opts = append(opts, mail.WithSMTPAuth(auth), mail.WithUsername(s.cfg.Username),
			mail.WithPassword(string(s.cfg.Password.Reveal())))
	}
	return mail.NewClient(s.cfg.Host, opts...)
}

func (s *smtpChannel) Deliver(ctx context.Context, d Delivery) (Receipt, error) {
	m, err := s.message(d)
	if err != nil {
		return Receipt{}, fmt.Errorf("smtp %s: %w", s.cfg.Name, err)
	}
	c, err := s.client()
	if err != nil {
		return Receipt{}, fmt.Errorf("smtp %s: %w", s.cfg.Name, &PermanentError{Err: err})
	}
	attempts, err := s.cfg.Retry.do(ctx, func(int) error {
		err := c.DialAndSendWithContext(ctx, m)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var se *mail.SendError
		if errors.As(err, &se) && !se.IsTemp() && se.Reason != mail.ErrConnCheck {
			return &PermanentError{Err: err}
		}
		return &retryable{err: err}
	})
	if err != nil {
		return Receipt{Attempts: attempts}, fmt.Errorf("smtp %s: %w", s.cfg.Name, err)
	}
	return Receipt{Attempts: attempts, Detail: fmt.Sprintf("accepted for %d recipients", len(s.recipients(d.Notice)))}, nil
}
