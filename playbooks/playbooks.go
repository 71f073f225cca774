// Package playbooks embeds the playbooks shipped with Countersign. The
// default is rollback.yaml, the 12-step rollback of DESIGN §3; package
// internal/playbook parses and validates it against the action registry.
//
// Invariant: these files are data only; every action they name must be
// registered in the binary that runs them (a test checks the default).
package playbooks

import "embed"

// FS holds every shipped playbook (*.yaml).
//
//go:embed *.yaml
var FS embed.FS

// Rollback is the name of the default rollback playbook in FS.
const Rollback = "rollback.yaml"
