// Package queue is the durable work queue behind asynchronous signing: the
// one interface that every backend (NATS JetStream, embedded or external, and
// Kafka) implements, plus the operator controls the rollback playbook uses on
// it.
//
// # Invariant
//
// A message that Publish reported as accepted is delivered to a consumer at
// least once until a consumer acknowledges it, terminates it, or an operator
// quarantines it; quarantined messages are re-delivered by Replay at most once
// per quarantine. Delivery is at-least-once everywhere, so idempotency is the
// consumer's job: the node's store keeps a unique constraint on
// (tenant, idempotency key), and broker de-duplication is only an
// optimisation (JetStream's de-duplication table is empty after a stream
// restore, and Kafka has none).
//
// # Message identity
//
// Message.ID is "<tenant>/<idempotency key>". JetStream carries it as the
// Nats-Msg-Id header (so a repeat inside the de-duplication window is
// reported as PublishResult.Duplicate); Kafka carries it as the record key
// and in a header, and accepts repeats as new records.
//
// # What "accepted" means
//
//   - JetStream: Publish returns once the server has sent its PubAck: the
//     message is stored in the stream (in the leader's file store and, with
//     replicas, in a quorum of them). Without SyncAlways the file store
//     flushes to the OS page cache and fsyncs periodically (every 2 minutes by
//     default), so a machine crash (not a process crash) can lose the most
//     recent accepted messages. With SyncAlways every write is fsynced before
//     the PubAck, at several times the per-message cost.
//   - Kafka: Publish returns when the partition leader has acknowledged the
//     produce request with acks=all (every in-sync replica has the record).
//     Kafka brokers fsync on their own schedule; durability comes from
//     replication, not fsync.
//
// # Controls
//
//   - Pause / Resume: stop and restart delivery to a named consumer. On
//     JetStream this is the server's consumer pause, so it survives
//     restarts of both workers and server. On Kafka the state is a record
//     in a compacted control topic that every worker watches; it survives
//     restarts of workers and brokers.
//   - Stats: backlog (not yet delivered), ack-pending (delivered, not
//     acknowledged), redelivered and pending (all not acknowledged).
//   - Positions: a JSON document of where everything stands, for the
//     incident's snapshot: stream and consumer sequences and ack floors on
//     JetStream; committed and end offsets per partition on Kafka.
//   - Snapshot: writes a backend-specific archive and returns its SHA-256 and
//     size. JetStream: the server's stream snapshot (messages and consumer
//     state, restorable into a fresh server). Kafka has no snapshot API: the
//     archive is a JSON-lines dump of every record between each partition's
//     start and end offsets, with offsets and headers; it is evidence and can
//     be re-published, but offsets themselves cannot be restored from it.
//   - Quarantine: moves the selected messages (by ID or sequence range) to
//     the replay stream or topic. JetStream deletes the originals from the
//     work stream so workers never see them; Kafka logs are immutable, so
//     the originals stay in the topic and the idempotent consumer is what
//     keeps a later delivery harmless.
//   - Replay: re-delivers the quarantined messages not yet replayed to a
//     handler at a bounded rate; DryRun lists exactly the IDs a replay would
//     deliver. A message is marked replayed when its handler returns nil;
//     quarantining an ID that is already in the replay set is refused, so a
//     set is not replayed twice.
package queue
