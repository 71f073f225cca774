// Package templates holds the default incident notice and postmortem
// templates (Go text/template). Operators copy and edit them; notify loads
// an operator's directory file by file over these defaults and validates
// every template at load (docs/notify.md lists what each must use).
package templates

import "embed"

// FS holds the default templates:
//
//	phase-a-internal.tmpl      A: responders and management, within minutes
//	phase-b-customer.tmpl      B: each affected tenant, within an hour
//	phase-c-regulator.tmpl     C: regulators and partners, within 4–24 h
//	phase-d-remediation.tmpl   D: per tenant remediation report, within 24–72 h
//	postmortem.md.tmpl         the postmortem draft written at close
//
//go:embed *.tmpl
var FS embed.FS
