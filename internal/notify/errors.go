package notify

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors; wrapped with context, test with errors.Is.
var (
	ErrTenantRequired   = errors.New("notify: tenant required")
	ErrUnknownTenant    = errors.New("notify: unknown tenant")
	ErrApprovalRequired = errors.New("notify: approval required")
	ErrNoChannel        = errors.New("notify: no channel takes this notice")
	ErrDigestMismatch   = errors.New("notify: notice digest does not match its content")
	// ErrDeliveryConflict: a delivery ID already delivered with different
	// content (a changed notice needs a new revision).
	ErrDeliveryConflict = errors.New("notify: delivery already made with different content")
	ErrConfig           = errors.New("notify: invalid configuration")
)

// TemplateError is a template that does not satisfy its phase's contract:
// it fails to parse, misses a required field or definition, or refers to a
// field the model does not have.
type TemplateError struct {
	File  string // template file name
	Field string // the required field (".Incident.ID") or definition ("subject"); may be empty
	Err   error
}

func (e *TemplateError) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("notify: template %s: %s: %v", e.File, e.Field, e.Err)
	}
	return fmt.Sprintf("notify: template %s: %v", e.File, e.Err)
}

func (e *TemplateError) Unwrap() error { return e.Err }

// MissingDataError is an input that lacks a field a phase needs.
type MissingDataError struct {
	Phase Phase
	Field string // JSON path in the input model
}

func (e *MissingDataError) Error() string {
	if name := e.Phase.Name(); name != "" {
		return fmt.Sprintf("notify: phase %s (%s) notice: input field %s is missing or empty", e.Phase, name, e.Field)
	}
	return fmt.Sprintf("notify: %s: input field %s is missing or empty", e.Phase, e.Field)
}

// CrossTenantError is a tenant notice whose text names another tenant.
type CrossTenantError struct {
	Phase  Phase
	Tenant string // the notice's tenant
	Other  string // the tenant it names
	Match  string // the text that matched
}

func (e *CrossTenantError) Error() string {
	return fmt.Sprintf("notify: phase %s notice for tenant %s names tenant %s (%q); remove it from the template or the input text",
		e.Phase, e.Tenant, e.Other, e.Match)
}

// ApprovalError is a notice sent without a sign-off on its exact digest.
type ApprovalError struct {
	Phase  Phase
	Digest string
	Reason string
}

func (e *ApprovalError) Error() string {
	return fmt.Sprintf("notify: phase %s notice %s needs an approval (legal sign-off): %s", e.Phase, e.Digest, e.Reason)
}

func (e *ApprovalError) Unwrap() error { return ErrApprovalRequired }

// PermanentError is a delivery failure that retrying cannot fix (a 4xx
// answer, a rejected recipient).
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// DeliveryError lists the channels a notice could not be delivered to.
type DeliveryError struct {
	Failed map[string]error // channel name → error
}

func (e *DeliveryError) Error() string {
	var parts []string
	for _, name := range sortedKeys(e.Failed) {
		parts = append(parts, name+": "+e.Failed[name].Error())
	}
	return "notify: delivery failed on " + strings.Join(parts, "; ")
}

func (e *DeliveryError) Unwrap() []error {
	out := make([]error, 0, len(e.Failed))
	for _, k := range sortedKeys(e.Failed) {
		out = append(out, e.Failed[k])
	}
	return out
}
