package api

import (
	"fmt"
	"net/http"
)

// ContentTypeProblem is the media type of RFC 9457 error bodies.
const ContentTypeProblem = "application/problem+json"

// TypeBase prefixes every problem type URI. The URIs are stable identifiers;
// docs/api.md documents each of them.
const TypeBase = "https://countersign.dev/problems/"

// Problem types. Clients switch on these, never on Detail.
const (
	TypeMalformed           = TypeBase + "malformed-request"
	TypeUnauthorized        = TypeBase + "unauthorized"
	TypeNotFound            = TypeBase + "not-found"
	TypeKeyNotFound         = TypeBase + "key-not-found"
	TypeKeyDisabled         = TypeBase + "key-disabled"
	TypeTooLarge            = TypeBase + "payload-too-large"
	TypeIdempotencyMissing  = TypeBase + "idempotency-key-missing"
	TypeIdempotencyMismatch = TypeBase + "idempotency-key-reused"
	TypeIdempotencyInFlight = TypeBase + "idempotency-key-in-flight"
	TypeUnsupported         = TypeBase + "unsupported"
	TypeMaintenance         = TypeBase + "maintenance"
	TypeUnavailable         = TypeBase + "unavailable"
	TypeKeysFrozen          = TypeBase + "keys-frozen"
	TypeInternal            = TypeBase + "internal"
)

// Problem is an RFC 9457 problem details object. It implements error so the
// client can return it as is.
type Problem struct {
	Type       string `json:"type"`
	Title      string `json:"title"`
	Status     int    `json:"status"`
	Detail     string `json:"detail,omitempty"`
	Instance   string `json:"instance,omitempty"`
	RetryAfter int    `json:"retry_after,omitempty"` // seconds; mirrors the Retry-After header on 503
}

func (p *Problem) Error() string {
	if p.Detail != "" {
		return fmt.Sprintf("%d %s: %s", p.Status, p.Title, p.Detail)
	}
	return fmt.Sprintf("%d %s", p.Status, p.Title)
}

// NewProblem builds a problem whose title is the standard text of status.
func NewProblem(status int, typ, detail string) *Problem {
	return &Problem{Type: typ, Title: http.StatusText(status), Status: status, Detail: detail}
}
