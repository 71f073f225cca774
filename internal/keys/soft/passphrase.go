package soft

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
)

// ErrNoPassphrase is returned when a passphrase source is empty or unset.
var ErrNoPassphrase = errors.New("soft: no passphrase")

// Passphrase is the secret key files are encrypted under. Its String,
// GoString and LogValue redact it, and it marshals to JSON as {}, so it
// cannot leak through fmt, slog or encoding/json by accident.
type Passphrase struct {
	secret []byte
}

// NewPassphrase copies b into a Passphrase.
func NewPassphrase(b []byte) Passphrase {
	return Passphrase{secret: bytes.Clone(b)}
}

// PassphraseFromEnv reads the passphrase from the environment variable name
// (the CLI uses COUNTERSIGN_KEY_PASSPHRASE).
func PassphraseFromEnv(name string) (Passphrase, error) {
	v, ok := os.LookupEnv(name)
	if !ok || v == "" {
		return Passphrase{}, fmt.Errorf("%w: environment variable %s is unset or empty", ErrNoPassphrase, name)
	}
	return NewPassphrase([]byte(v)), nil
}

// PassphraseFromFile reads the passphrase from a file; one trailing newline
// (LF or CRLF) is removed, as editors and `echo` add one.
func PassphraseFromFile(path string) (Passphrase, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Passphrase{}, fmt.Errorf("soft: read passphrase file: %w", err)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	if len(b) == 0 {
		return Passphrase{}, fmt.Errorf("%w: passphrase file %s is empty", ErrNoPassphrase, path)
	}
	return Passphrase{secret: b}, nil
}

// Empty reports whether no passphrase is set.
func (p Passphrase) Empty() bool { return len(p.secret) == 0 }

// String redacts.
func (p Passphrase) String() string { return "[REDACTED]" }

// GoString redacts.
func (p Passphrase) GoString() string { return "soft.Passphrase{[REDACTED]}" }

// LogValue redacts.
func (p Passphrase) LogValue() slog.Value { return slog.StringValue("[REDACTED]") }

// Format makes every fmt verb (%v, %+v, %x, %q...) print the redaction.
func (p Passphrase) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte("[REDACTED]")) }
