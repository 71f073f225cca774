// Package auditlog turns the store's append-only audit table into a
// verifiable log: RFC 6962 Merkle hashing, signed C2SP checkpoints,
// inclusion and consistency proofs, C2SP tlog-tiles, and offline
// verification.
//
// Invariant: every committed audit event is a leaf at its index, forever;
// each checkpoint is consistent with every earlier one.
package auditlog
