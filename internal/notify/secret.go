package notify

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
)

// Secret is a credential (HMAC key, routing key, password, webhook URL with
// a token). It never prints: String, LogValue and MarshalText redact it.
type Secret struct {
	value  []byte
	source string // "env:NAME" or "file:PATH"
}

// NewSecret wraps value; source says where it came from (for messages).
func NewSecret(value []byte, source string) Secret {
	return Secret{value: bytes.Clone(value), source: source}
}

// Reveal returns the secret's bytes.
func (s Secret) Reveal() []byte { return s.value }

// Empty reports whether the secret has no value.
func (s Secret) Empty() bool { return len(s.value) == 0 }

func (s Secret) String() string { return "[redacted]" }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value {
	if s.source == "" {
		return slog.StringValue("[redacted]")
	}
	return slog.StringValue("[redacted from " + s.source + "]")
}

// MarshalText keeps secrets out of encoded output.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.LogValue().String()), nil }

// SecretRef is how the configuration names a secret: exactly one of an
// environment variable or a file (trailing newlines are trimmed). Secrets
// are never written inline in the configuration file.
type SecretRef struct {
	Env  string `yaml:"env,omitempty" json:"env,omitempty"`
	File string `yaml:"file,omitempty" json:"file,omitempty"`
}

// IsZero reports whether the reference names nothing.
func (r SecretRef) IsZero() bool { return r.Env == "" && r.File == "" }

func (r SecretRef) String() string {
	switch {
	case r.Env != "":
		return "env:" + r.Env
	case r.File != "":
		return "file:" + r.File
	}
	return "none"
}

// Resolve reads the secret.
func (r SecretRef) Resolve(getenv func(string) string) (Secret, error) {
	switch {
	case r.Env != "" && r.File != "":
		return Secret{}, fmt.Errorf("%w: secret names both env %s and file %s", ErrConfig, r.Env, r.File)
	case r.Env != "":
		v := getenv(r.Env)
		if v == "" {
			return Secret{}, fmt.Errorf("%w: secret: environment variable %s is empty or unset", ErrConfig, r.Env)
		}
		return NewSecret([]byte(v), r.String()), nil
	case r.File != "":
		b, err := os.ReadFile(r.File)
		if err != nil {
			return Secret{}, fmt.Errorf("%w: secret: %v", ErrConfig, err)
		}
		b = bytes.TrimRight(b, "\r\n")
		if len(b) == 0 {
			return Secret{}, fmt.Errorf("%w: secret file %s is empty", ErrConfig, r.File)
		}
		return NewSecret(b, r.String()), nil
	}
	return Secret{}, fmt.Errorf("%w: secret must name env or file", ErrConfig)
}
