package notify

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfig(t *testing.T) {
	b, err := os.ReadFile("testdata/notify.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "webhook.key")
	if err := os.WriteFile(keyFile, []byte("hmac-key-from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	src := strings.ReplaceAll(string(b), "{file: webhook.key}", "{file: "+keyFile+"}")
	src = strings.ReplaceAll(src, "dir: notices", "dir: "+filepath.Join(dir, "notices"))
	c, err := ParseConfig([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if c.NextUpdate(PhaseInternal) != 20*time.Minute || c.NextUpdate(PhaseCustomer) != 2*time.Hour || c.NextUpdate(PhaseRegulator) != 24*time.Hour {
		t.Errorf("next update A %v B %v C %v", c.NextUpdate(PhaseInternal), c.NextUpdate(PhaseCustomer), c.NextUpdate(PhaseRegulator))
	}
	env := map[string]string{"SLACK_WEBHOOK_URL": "https://hooks.slack.example/services/T/B/TOKEN", "PAGERDUTY_ROUTING_KEY": "RK",
		"SMTP_PASSWORD": "pw"}
	var logs bytes.Buffer
	s, err := c.Sender(BuildOptions{Getenv: func(k string) string { return env[k] }, Recorder: &auditLog{},
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Channels()) != 5 || !s.NeedsApproval(PhaseCustomer) || s.NeedsApproval(PhaseInternal) {
		t.Errorf("sender %+v", s.Channels())
	}
	for _, ch := range c.Channels {
		if d := ch.Destination(); strings.Contains(d, "TOKEN") || strings.Contains(d, "hmac-key") {
			t.Errorf("destination reveals a secret: %s", d)
		}
	}
	// A missing secret names the channel and the variable.
	delete(env, "SMTP_PASSWORD")
	_, err = c.Sender(BuildOptions{Getenv: func(k string) string { return env[k] }, Recorder: &auditLog{}})
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "mail") || !strings.Contains(err.Error(), "SMTP_PASSWORD") {
		t.Errorf("missing secret: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tt := range []struct{ name, src, want string }{
		{"inline secret", "channels:\n  - {name: x, type: webhook, url: 'http://h', secret: hunter2}\n", "secrets are not written in the configuration"},
		{"unknown field", "channels:\n  - {name: x, type: file, dri: /tmp}\n", "field dri not found"},
		{"bad phase", "approval: {phases: [E]}\n", `unknown phase "E"`},
		{"duplicate name", "channels:\n  - {name: x, type: file, dir: a}\n  - {name: x, type: file, dir: b}\n", `"x" used twice`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.src))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseConfig = %v, want %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error echoes the secret: %v", err)
			}
		})
	}
}

func TestSecretRedaction(t *testing.T) {
	s := NewSecret([]byte("top-secret"), "env:X")
	var b bytes.Buffer
	slog.New(slog.NewJSONHandler(&b, nil)).Info("x", "secret", s, "cfg", struct{ K Secret }{s})
	if strings.Contains(b.String(), "top-secret") || !strings.Contains(b.String(), "redacted") {
		t.Errorf("log: %s", b.String())
	}
	if s.String() != "[redacted]" || string(s.Reveal()) != "top-secret" {
		t.Error("String or Reveal wrong")
	}
}
