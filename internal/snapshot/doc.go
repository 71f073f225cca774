// Package snapshot takes the incident snapshot of step 4 of the rollback
// playbook: consistent copies of the store, the queue (stream and consumer
// positions), the audit log's latest checkpoint, the key inventory and the
// key-event log, the flags file and the fleet's revision history, each
// written with its SHA-256 to an immutable store, followed by a manifest.
//
// # Layout
//
// A snapshot with id ID writes every part as "snapshots/ID/<part name>" and
// then, last, its manifest as "manifests/<seq>.json" (seq zero-padded to ten
// digits, starting at 1). The manifest lists every part's object name, kind,
// size, SHA-256 and kind-specific metadata (store schema version, audit tree
// size and root, queue positions, ...), and the name and SHA-256 of the
// previous snapshot's manifest: the manifests form a hash chain, so deleting
// or replacing an older snapshot is detected by Verify. Take returns the new
// manifest's own SHA-256, which the caller records as an audit event; that
// event is what detects the loss of the newest snapshot.
//
// # Invariants
//
//   - Nothing is ever overwritten: ImmutableStore.Put refuses an existing
//     name with ErrExists. The chain is extended with a write-once Put of
//     the next sequence number, so two concurrent Takes cannot fork it (the
//     loser re-reads the head and tries the next number).
//   - A manifest is written only after every part it names has been written
//     completely; a failed Take leaves at most orphan parts that no manifest
//     names.
//   - No part contains private key material: the key inventory is built from
//     an explicit list of public fields (public key, certificate chain,
//     provider URI with any PKCS#11 pin-value removed), never from a
//     provider.
package snapshot
