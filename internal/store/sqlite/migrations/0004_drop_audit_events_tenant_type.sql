-- Contract: drop the index audit_events (tenant_id, type). No query of any
-- release has read through it (the log is read by idx ranges only), and
-- every signature paid for it with one more B-tree insert in its commit
-- (measured: about 5 % of a batch signature's server CPU on SQLite,
-- docs/benchmarks.md). Schema-3 binaries run unchanged on schema 4 when
-- their release declares SchemaMax = 4 (docs/design/schema-migrations.md).
DROP INDEX IF EXISTS audit_events_tenant_type;
