// Package evidence builds and verifies an incident's evidence bundle: one
// tar holding the snapshot manifest (and optionally the snapshots), the
// incident timeline, the reconciliation report (JSON and Markdown), the
// audit checkpoints before and after with their consistency proof, a C2SP
// tlog-proof per remediated signature, the artifacts themselves, the trust
// material to verify all of it (log verifier key, CA chain, key versions'
// public keys), and statement.dsse.json: an in-toto Statement v1 whose
// subjects are the SHA-256 of every other file and whose predicate is the
// reconciliation summary, in a DSSE envelope signed by the incident lead.
//
// Invariants:
//   - The archive is canonical: files in byte order of their names, the
//     statement last, fixed headers (mode 0644, uid/gid 0, mtime 0), so
//     the same contents always give the same bytes and Verify can demand
//     that exact encoding. Any changed, added, removed or reordered byte
//     fails verification with the file it belongs to.
//   - Verify needs nothing online: every key it checks against is in the
//     bundle and covered by the signed statement, except the incident
//     lead's public key, which the verifier must get out of band.
//   - The statement's SHA-256 is recorded as an audit event ("evidence.
//     statement"), so the bundle is anchored in the append-only log.
package evidence
