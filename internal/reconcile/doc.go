// Package reconcile finds and settles what a regressive release left behind:
// it replays in-flight work idempotently under the stable release, examines
// the audit log across the incident (consistency proof from the last
// checkpoint before the regressive deploy to the current one, event counts,
// gaps, key events), and re-verifies every signature made in the incident
// window, classifying each as valid, invalid, metadata-drift or
// unverifiable with a proposed remediation per document.
//
// Invariants:
//   - Reconciliation never rewrites a signature: it reads, verifies and
//     proposes. The only writes are replays, which go through the stable
//     node's own idempotent path (one idempotency key, one artifact), so a
//     replay run twice creates nothing the second time.
//   - Nothing is guessed: an in-flight item whose outcome cannot be decided
//     from the store (an idempotency key holding a signature for another
//     request, an unreadable stored request) is listed for manual review and
//     never replayed.
//   - A signature is "valid" only if it verifies under the key version it
//     names with exactly the algorithm and digest it claims, and the digest
//     is the key algorithm's default; a genuine signature with other
//     parameters is "metadata-drift", never "valid" and never "invalid".
package reconcile
