package queueurl

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"unicode"
)

// FuzzRedact: whatever the URL around it, a password given in a queue URL
// never survives Redact, and never appears in Parse's error. Parse never
// panics, and every error it returns is ErrInvalid.
func FuzzRedact(f *testing.F) {
	for _, seed := range [][4]string{
		{"nats", "u", "hunter2hunter2", "a:4222,nats://b:4222"},
		{"kafka", "svc", "pa@ss:w/rd?#", "k1:9092,k2:9092/topic?sasl=plain"},
		{"kafka", "svc", "s3cret-pw", "[::1]:9092?sasl=scram-sha-512&tls=true"},
		{"tls", "u", "%41%42%43password", "h:4222?replicas=3"},
		{"nats", "", "only-a-password", "h:4222"},
	} {
		f.Add(seed[0], seed[1], seed[2], seed[3])
	}
	f.Fuzz(func(t *testing.T, scheme, user, pass, rest string) {
		// Errors quote URLs with %q, which adds quotes and escapes: a
		// password holding '"', '\' or an unprintable rune could then be
		// "found" in text that only looks like it.
		if strings.ContainsAny(user, "@/?#") || strings.ContainsAny(pass, "\"\\") || !printable(pass) {
			return
		}
		// A distinctive prefix: no fixed text of an error message contains
		// it, so finding the password means the password leaked.
		pass = "Zq9" + pass
		if len(pass) < 8 {
			return
		}
		for _, enc := range []string{pass, url.PathEscape(pass), url.QueryEscape(pass)} {
			raw := scheme + "://" + user + ":" + enc + "@" + rest
			decoded, _ := url.PathUnescape(enc)
			red := Redact(raw)
			for _, secret := range []string{enc, pass, decoded} {
				if len(secret) >= 8 && strings.Contains(red, secret) && !strings.Contains(scheme+user+rest+"xxxxx(unparsable URL)", secret) {
					t.Fatalf("Redact(%q) = %q keeps the password %q", raw, red, secret)
				}
			}
			_, err := Parse(raw)
			if err == nil {
				continue
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse(%q): %v is not ErrInvalid", raw, err)
			}
			for _, secret := range []string{enc, pass, decoded} {
				if len(secret) >= 8 && strings.Contains(err.Error(), secret) && !strings.Contains(scheme+user+rest, secret) {
					t.Fatalf("Parse(%q) error %q carries the password %q", raw, err, secret)
				}
			}
		}
	})
}

func printable(s string) bool {
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}
