// Package pkcs11 is the key provider for PKCS#11 tokens (HSMs; tested
// against SoftHSM2), URI scheme "pkcs11:". It is built on crypto11 and needs
// cgo; a binary built without cgo gets a provider whose constructor returns
// keys.ErrNotBuilt ("built without PKCS#11 support").
//
// Invariants: private keys are generated on the token and never leave it
// (CKA_SENSITIVE, non-extractable); the module path and PIN come from Config,
// never from a key URI; PINs are redacted in every log and error; a PKCS#11
// failure is surfaced as *Error carrying the CKR_ code, after one transparent
// recovery (close, reconfigure, find the key again) for the handle and
// session errors a token restart causes.
package pkcs11

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
)

// Scheme is the URI scheme of this provider.
const Scheme = "pkcs11"

// ErrNotFound is returned when no key pair on the token has the URI's id.
var ErrNotFound = errors.New("pkcs11: key not found on token")

// PIN is a token user PIN. It prints, logs and marshals redacted.
type PIN struct{ secret string }

// NewPIN wraps a PIN value.
func NewPIN(s string) PIN { return PIN{secret: s} }

// String redacts.
func (PIN) String() string { return "[REDACTED]" }

// GoString redacts.
func (PIN) GoString() string { return "pkcs11.PIN{[REDACTED]}" }

// LogValue redacts.
func (PIN) LogValue() slog.Value { return slog.StringValue("[REDACTED]") }

// Format makes every fmt verb print the redaction.
func (PIN) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte("[REDACTED]")) }

// Config selects a module, a token and how to log in.
type Config struct {
	// ModulePath is the PKCS#11 library (e.g. /usr/lib/softhsm/libsofthsm2.so).
	ModulePath string
	// TokenLabel selects the token (slot numbers change when tokens are
	// initialised; labels do not).
	TokenLabel string
	// PIN is the user PIN; PINFile, if set instead, is read at New (one
	// trailing newline removed).
	PIN     PIN
	PINFile string
	// MaxSessions caps crypto11's session pool (0: crypto11's default).
	MaxSessions int
}

// LogValue lists the configuration without the PIN.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(slog.String("module", c.ModulePath), slog.String("token", c.TokenLabel),
		slog.String("pin_file", c.PINFile), slog.Bool("pin_set", c.PIN.secret != ""))
}

func (c Config) pin() (string, error) {
	if c.PINFile == "" {
		if c.PIN.secret == "" {
			return "", errors.New("pkcs11: no PIN configured (set PIN or PINFile)")
		}
		return c.PIN.secret, nil
	}
	b, err := os.ReadFile(c.PINFile)
	if err != nil {
		return "", fmt.Errorf("pkcs11: read PIN file: %w", err)
	}
	b = bytes.TrimSuffix(bytes.TrimSuffix(b, []byte("\n")), []byte("\r"))
	if len(b) == 0 {
		return "", fmt.Errorf("pkcs11: PIN file %s is empty", c.PINFile)
	}
	return string(b), nil
}

// Error is a PKCS#11 failure: the operation, the CKR_ return value and
// its name. The rollback playbook classifies HSM failures by Code.
type Error struct {
	Op   string
	Code uint   // CKR_ value, e.g. 0xA0
	Name string // e.g. "CKR_PIN_INCORRECT"
	Err  error
}

func (e *Error) Error() string {
	return fmt.Sprintf("pkcs11: %s: %s (0x%X): %v", e.Op, e.Name, e.Code, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// URI is a parsed key URI in the style of RFC 7512:
// pkcs11:token=<label>;id=<percent-encoded bytes>;object=<label>.
type URI struct {
	Token  string
	ID     []byte
	Object string
}

// String formats the URI; id is written as %XX per byte (RFC 7512).
func (u URI) String() string {
	var id strings.Builder
	for _, b := range u.ID {
		fmt.Fprintf(&id, "%%%02x", b)
	}
	s := Scheme + ":token=" + escape(u.Token) + ";id=" + id.String()
	if u.Object != "" {
		s += ";object=" + escape(u.Object)
	}
	return s
}

// escape percent-encodes everything outside RFC 7512's unreserved set.
func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~:[]@!$'()*+,=&", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// ParseURI parses a pkcs11: key URI. It refuses module-path and PIN
// attributes: those come from Config only. id may also be plain hex.
func ParseURI(s string) (URI, error) {
	rest, ok := strings.CutPrefix(s, Scheme+":")
	if !ok {
		return URI{}, fmt.Errorf("pkcs11: %q is not a pkcs11: URI", s)
	}
	rest, _, _ = strings.Cut(rest, "?") // query attributes (pin-value, module-path) are ignored by design
	var u URI
	for _, attr := range strings.Split(rest, ";") {
		if attr == "" {
			continue
		}
		k, v, ok := strings.Cut(attr, "=")
		if !ok {
			return URI{}, fmt.Errorf("pkcs11: URI attribute %q has no value", k)
		}
		dv, err := url.PathUnescape(v)
		if err != nil {
			return URI{}, fmt.Errorf("pkcs11: URI attribute %s: %w", k, err)
		}
		switch k {
		case "token":
			u.Token = dv
		case "object":
			u.Object = dv
		case "id":
			if !strings.Contains(v, "%") {
				if b, err := hex.DecodeString(v); err == nil {
					dv = string(b)
				}
			}
			u.ID = []byte(dv)
		}
	}
	if u.Token == "" || len(u.ID) == 0 {
		return URI{}, fmt.Errorf("pkcs11: URI %q needs token= and id=", s)
	}
	return u, nil
}
