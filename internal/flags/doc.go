// Package flags holds Countersign's runtime feature flags: algorithm and
// code-path choices (the CMS digest, the refactored signing path, the default
// key algorithm) that a release or an operator can change without a deploy.
//
// Flags are defined in a flagd-format JSON file (https://flagd.dev/reference/flag-definitions/)
// and evaluated through OpenFeature: a [Provider] wraps the flagd evaluator
// (github.com/open-feature/flagd/core), so targeting by tenant, release or
// instance and fractional rollouts follow flagd's JsonLogic semantics.
//
// A [Set] owns one flag file. It reloads the file when it changes
// ([Set.Watch], [Set.Reload]); a file that does not parse, does not conform to
// the flagd schema or names a missing default variant is refused, the last
// good definitions stay in force, and the error is reported ([Set.Err], a
// PROVIDER_STALE event, a log line). [Set.Snapshot] returns the exact bytes in
// force and their SHA-256, which is what the playbook's snapshot step stores.
//
// Invariant: every flag flip is evidence. [SetVariant] and [Disable] hand an
// audit event to a [Recorder] before the file changes; if recording fails the
// file is not touched. The file is replaced atomically (temporary file,
// fsync, rename), so a reader never sees a partial definition.
package flags
