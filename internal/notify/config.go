package notify

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the notify configuration file (YAML; docs/notify.md). Secrets
// are named by reference ({env: NAME} or {file: PATH}), never inline.
type Config struct {
	// Templates is a directory of operator templates (optional; the
	// shipped defaults fill any file it lacks).
	Templates string          `yaml:"templates,omitempty"`
	Channels  []ChannelConfig `yaml:"channels"`
	Approval  struct {
		// Phases that need a sign-off on the exact digest (e.g. [B, C]).
		Phases []Phase `yaml:"phases"`
	} `yaml:"approval"`
	Schedule ScheduleConfig `yaml:"schedule"`
	Retry    RetryConfig    `yaml:"retry"`
}

// ChannelConfig is one channel. Type decides which fields apply.
type ChannelConfig struct {
	Name    string   `yaml:"name"`
	Type    string   `yaml:"type"` // webhook | slack | smtp | pagerduty | file
	Phases  []Phase  `yaml:"phases,omitempty"`
	Tenants []string `yaml:"tenants,omitempty"`

	URL        string    `yaml:"url,omitempty"`         // webhook, pagerduty
	URLSecret  SecretRef `yaml:"url_secret,omitempty"`  // slack: the webhook URL carries a token
	Secret     SecretRef `yaml:"secret,omitempty"`      // webhook HMAC key
	RoutingKey SecretRef `yaml:"routing_key,omitempty"` // pagerduty

	Host     string              `yaml:"host,omitempty"` // smtp
	Port     int                 `yaml:"port,omitempty"`
	TLS      string              `yaml:"tls,omitempty"`
	Username string              `yaml:"username,omitempty"`
	Password SecretRef           `yaml:"password,omitempty"`
	From     string              `yaml:"from,omitempty"`
	To       []string            `yaml:"to,omitempty"`
	TenantTo map[string][]string `yaml:"tenant_to,omitempty"`

	Dir string `yaml:"dir,omitempty"` // file
}

// ScheduleConfig configures "next update at" reminders.
type ScheduleConfig struct {
	// NextUpdate overrides Phase.DefaultNextUpdate per phase.
	NextUpdate map[Phase]time.Duration `yaml:"next_update,omitempty"`
	// AutoSend lists the phases whose status update is sent automatically
	// when due (others only remind).
	AutoSend []Phase `yaml:"auto_send,omitempty"`
	// RemindEvery repeats a reminder while an update stays overdue
	// (default DefaultRemindEvery).
	RemindEvery time.Duration `yaml:"remind_every,omitempty"`
}

// RetryConfig is the YAML form of Retry.
type RetryConfig struct {
	Attempts int           `yaml:"attempts,omitempty"`
	Initial  time.Duration `yaml:"initial,omitempty"`
	Max      time.Duration `yaml:"max,omitempty"`
}

// UnmarshalText accepts "A".."D" or a phase name.
func (p *Phase) UnmarshalText(b []byte) error {
	v, err := ParsePhase(string(b))
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// UnmarshalYAML refuses inline secrets.
func (r *SecretRef) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: secrets are not written in the configuration: use {env: NAME} or {file: PATH}", n.Line)
	}
	type plain SecretRef
	var p plain
	if err := n.Decode(&p); err != nil {
		return err
	}
	*r = SecretRef(p)
	return nil
}

// LoadConfig reads and checks a configuration file. Unknown fields are
// errors, so a misspelt key is not silently ignored.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("notify: %w", err)
	}
	return ParseConfig(b)
}

// ParseConfig parses a configuration.
func ParseConfig(b []byte) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	names := map[string]bool{}
	for i, ch := range c.Channels {
		if ch.Name == "" {
			return nil, fmt.Errorf("%w: channel %d has no name", ErrConfig, i+1)
		}
		if names[ch.Name] {
			return nil, fmt.Errorf("%w: channel name %q used twice", ErrConfig, ch.Name)
		}
		names[ch.Name] = true
	}
	return &c, nil
}

// NextUpdate is the configured interval to the next update of phase p.
func (c *Config) NextUpdate(p Phase) time.Duration {
	if d, ok := c.Schedule.NextUpdate[p]; ok {
		return d
	}
	return p.DefaultNextUpdate()
}

// BuildOptions are the process's parts a Sender is built with.
type BuildOptions struct {
	Getenv   func(string) string // default os.Getenv
	Recorder Recorder
	Now      func() time.Time
	Sleep    Sleeper
	Client   *http.Client
	Logger   *slog.Logger
}

// Channel builds one configured channel, resolving its secrets.
func (c *Config) Channel(ch ChannelConfig, o BuildOptions) (Channel, error) {
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	retry := Retry{Attempts: c.Retry.Attempts, Initial: c.Retry.Initial, Max: c.Retry.Max, Sleep: o.Sleep}
	secret := func(what string, r SecretRef) (Secret, error) {
		s, err := r.Resolve(o.Getenv)
		if err != nil {
			return Secret{}, fmt.Errorf("channel %s: %s: %w", ch.Name, what, err)
		}
		return s, nil
	}
	switch ch.Type {
	case "webhook":
		key, err := secret("secret", ch.Secret)
		if err != nil {
			return nil, err
		}
		return NewWebhook(WebhookConfig{Name: ch.Name, URL: ch.URL, Secret: key, Retry: retry, Client: o.Client, Now: o.Now})
	case "slack":
		u, err := secret("url_secret", ch.URLSecret)
		if err != nil {
			return nil, err
		}
		return NewSlack(SlackConfig{Name: ch.Name, URL: u, Retry: retry, Client: o.Client})
	case "pagerduty":
		key, err := secret("routing_key", ch.RoutingKey)
		if err != nil {
			return nil, err
		}
		return NewPagerDuty(PagerDutyConfig{Name: ch.Name, URL: ch.URL, RoutingKey: key, Retry: retry, Client: o.Client})
	case "smtp":
		var pw Secret
		if ch.Username != "" {
			var err error
			if pw, err = secret("password", ch.Password); err != nil {
				return nil, err
			}
		}
		return NewSMTP(SMTPConfig{Name: ch.Name, Host: ch.Host, Port: ch.Port, TLS: ch.TLS, Username: ch.Username,
			Password: pw, From: ch.From, To: ch.To, TenantTo: ch.TenantTo, Retry: retry})
	case "file":
		return NewFile(FileConfig{Name: ch.Name, Dir: ch.Dir})
	}
	return nil, fmt.Errorf("%w: channel %s: type %q (want webhook|slack|smtp|pagerduty|file)", ErrConfig, ch.Name, ch.Type)
}

// Sender builds every channel and returns the Sender.
func (c *Config) Sender(o BuildOptions) (*Sender, error) {
	var routes []Route
	for _, ch := range c.Channels {
		built, err := c.Channel(ch, o)
		if err != nil {
			return nil, err
		}
		routes = append(routes, Route{Channel: built, Phases: ch.Phases, Tenants: ch.Tenants})
	}
	return NewSender(SenderConfig{Routes: routes, Recorder: o.Recorder, RequireApproval: c.Approval.Phases,
		Now: o.Now, Logger: o.Logger})
}

// Destination describes where a channel delivers without revealing a
// secret: a URL's host only, SMTP host and recipients, the directory.
func (ch ChannelConfig) Destination() string {
	host := func(raw string) string {
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			return "(invalid url)"
		}
		return u.Scheme + "://" + u.Host
	}
	switch ch.Type {
	case "webhook":
		return host(ch.URL) + " (HMAC key " + ch.Secret.String() + ")"
	case "slack":
		return "incoming webhook URL from " + ch.URLSecret.String()
	case "pagerduty":
		u := ch.URL
		if u == "" {
			u = DefaultPagerDutyURL
		}
		return host(u) + " (routing key " + ch.RoutingKey.String() + ")"
	case "smtp":
		n := len(ch.TenantTo)
		return fmt.Sprintf("%s:%d tls=%s to=%s (+%d tenant lists)", ch.Host, ch.Port, ch.TLS, strings.Join(ch.To, ","), n)
	case "file":
		return ch.Dir
	}
	return ""
}
