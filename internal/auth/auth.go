// Package auth mints and checks tenant API tokens.
//
// A token reads "cst_<id>_<secret>": id is public and indexes the store row,
// secret is 32 random bytes (base64url) of which only the SHA-256 is stored.
// Checks compare hashes in constant time, and a token's secret never reaches
// logs (Secret has a redacting LogValue).
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/countersign/countersign/internal/store"
)

const prefix = "cst_"

// ErrInvalid is returned for any token that does not authenticate. It does
// not say why, on purpose.
var ErrInvalid = errors.New("auth: invalid token")

// Secret is a whole token string. It redacts itself in logs and fmt.
type Secret string

func (Secret) LogValue() slog.Value { return slog.StringValue("cst_[REDACTED]") }
func (Secret) String() string       { return "cst_[REDACTED]" }
func (Secret) GoString() string     { return "auth.Secret(REDACTED)" }

// Mint makes a new token for tenantID: the string to hand to the user once,
// and the row to store.
func Mint(tenantID string, now time.Time) (Secret, store.Token, error) {
	var id [8]byte
	var sec [32]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", store.Token{}, fmt.Errorf("auth: %w", err)
	}
	if _, err := rand.Read(sec[:]); err != nil {
		return "", store.Token{}, fmt.Errorf("auth: %w", err)
	}
	ids := hex.EncodeToString(id[:])
	secret := base64.RawURLEncoding.EncodeToString(sec[:])
	h := sha256.Sum256([]byte(secret))
	return Secret(prefix + ids + "_" + secret), store.Token{ID: ids, TenantID: tenantID, SecretHash: h[:], CreatedAt: now}, nil
}

// parse splits a token into id and secret.
func parse(tok string) (id, secret string, ok bool) {
	rest, ok := strings.CutPrefix(tok, prefix)
	if !ok {
		return "", "", false
	}
	id, secret, ok = strings.Cut(rest, "_")
	if !ok || len(id) != 16 || len(secret) != 43 {
		return "", "", false
	}
	return id, secret, true
}

// TokenStore is what Verifier needs of the store.
type TokenStore interface {
	Token(ctx context.Context, id string) (store.Token, error)
}

// Verifier checks bearer tokens, caching store rows for TTL so the hot path
// does not read the database on every request. A revoked token stops
// working within TTL.
type Verifier struct {
	store TokenStore
	ttl   time.Duration
	now   func() time.Time

	mu    sync.Mutex
	cache map[string]cachedToken // c.mu must be held
}

type cachedToken struct {
	tok     store.Token
	found   bool
	expires time.Time
}

// DefaultTTL bounds how long a revoked token may still authenticate.
const DefaultTTL = 5 * time.Second

// NewVerifier returns a Verifier; ttl <= 0 means DefaultTTL.
func NewVerifier(s TokenStore, ttl time.Duration, now func() time.Time) *Verifier {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	if now == nil {
		now = time.Now
	}
	return &Verifier{store: s, ttl: ttl, now: now, cache: make(map[string]cachedToken)}
}

// Verify returns the tenant the token belongs to, or ErrInvalid. Errors
// reaching the store are returned wrapped (not ErrInvalid) so the caller can
// answer 503 rather than 401.
func (v *Verifier) Verify(ctx context.Context, token string) (tenantID string, err error) {
	id, secret, ok := parse(token)
	if !ok {
		return "", ErrInvalid
	}
	now := v.now()
	v.mu.Lock()
	c, hit := v.cache[id]
	v.mu.Unlock()
	if !hit || now.After(c.expires) {
		t, err := v.store.Token(ctx, id)
		switch {
		case errors.Is(err, store.ErrNotFound):
			c = cachedToken{found: false, expires: now.Add(v.ttl)}
		case err != nil:
			return "", fmt.Errorf("auth: look up token: %w", err)
		default:
			c = cachedToken{tok: t, found: true, expires: now.Add(v.ttl)}
		}
		v.mu.Lock()
		if len(v.cache) > 100_000 {
			clear(v.cache) // bound memory under a flood of random ids
		}
		v.cache[id] = c
		v.mu.Unlock()
	}
	h := sha256.Sum256([]byte(secret))
	// Compare even when the row is missing so timing does not tell a
	// missing id from a wrong secret.
	want := c.tok.SecretHash
	if !c.found {
		want = make([]byte, sha256.Size)
	}
	if subtle.ConstantTimeCompare(h[:], want) != 1 || !c.found || c.tok.Revoked {
		return "", ErrInvalid
	}
	return c.tok.TenantID, nil
}
