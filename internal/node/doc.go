// Package node is the signing data plane: the HTTP API that signs and
// verifies documents for authenticated tenants.
//
// Invariants it keeps:
//   - A 200 from POST /v1/sign means the signature and its audit event are
//     committed together (durably, as the store is configured) before the
//     response is written.
//   - One Idempotency-Key of a tenant has at most one persisted signature:
//     a replay with the same body gets the stored response byte for byte, a
//     reuse with another body gets 422, concurrent duplicates inside one
//     process wait for the first; across processes the store's unique
//     constraint decides and the loser returns the winner's response.
//   - Every signature is stamped with release, instance, key version,
//     algorithm and digest OIDs.
//   - A tenant never learns whether another tenant's key exists (404 for both).
package node
