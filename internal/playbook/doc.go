// Package playbook runs executable playbooks: YAML files of ordered steps,
// each calling a registered Action, with approval gates, timeouts, retries,
// failure policies and conditions, driven by a durable engine.
//
// Invariant: every step transition, approval and run-state change is
// appended to the run's journal — together with its audit event, in one
// JournalStore write — before the engine acts on it. The journal is the only
// state: Resume rebuilds a run from it after a crash at any point and never
// repeats a step journaled as finished. A step journaled as running but not
// finished is run again with the same idempotency token (Call.Token), so an
// action decides whether its effect already happened. An action that is not
// available in this build is recorded as "unavailable", never as succeeded.
//
// Template syntax (in a step's "with" values and "when" conditions):
//
//	${params.NAME}                 a playbook parameter (a string)
//	${steps.ID.outputs.KEY[.SUB]}  an output of an earlier step
//	${run.id} ${run.actor}         the run's ID and the actor who started it
//	$${                            a literal "${"
//
// A "with" string that is exactly one reference takes the referenced value
// with its type (number, list, map); otherwise references are interpolated
// as text. A reference to a missing output fails the step.
//
// A "when" condition is one of
//
//	${REF}            true unless the value is missing, false, 0, "" or empty
//	!${REF}           the negation
//	${REF} OP VALUE   OP is == != < <= > >=; VALUE a number, true, false, or a string
//
// and a step whose condition is false is journaled as skipped.
package playbook
