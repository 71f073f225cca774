-- Schema 1: the initial schema. Times are INTEGER microseconds since the
-- Unix epoch (UTC); hashes and entries are BLOBs, kept byte for byte.

CREATE TABLE tenants (
	id         TEXT PRIMARY KEY,
	name       TEXT NOT NULL,
	created_at INTEGER NOT NULL
);

CREATE TABLE tokens (
	id          TEXT PRIMARY KEY,
	tenant_id   TEXT NOT NULL,
	secret_hash BLOB NOT NULL,
	created_at  INTEGER NOT NULL,
	revoked     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX tokens_tenant ON tokens (tenant_id);

CREATE TABLE key_versions (
	tenant_id      TEXT NOT NULL,
	name           TEXT NOT NULL,
	version        INTEGER NOT NULL CHECK (version >= 1),
	algorithm      TEXT NOT NULL,
	provider_uri   TEXT NOT NULL,
	public_key_pem TEXT NOT NULL,
	cert_chain_pem TEXT NOT NULL,
	state          TEXT NOT NULL CHECK (state IN ('enabled', 'disabled', 'destroyed')),
	created_at     INTEGER NOT NULL,
	PRIMARY KEY (tenant_id, name, version)
);

CREATE TABLE settings (
	name       TEXT PRIMARY KEY,
	value      TEXT NOT NULL,
	updated_at INTEGER NOT NULL
);

CREATE TABLE signatures (
	id               TEXT PRIMARY KEY,
	tenant_id        TEXT NOT NULL,
	idempotency_key  TEXT NOT NULL,
	request_hash     BLOB NOT NULL,
	key_name         TEXT NOT NULL,
	key_version      INTEGER NOT NULL,
	format           TEXT NOT NULL,
	algorithm        TEXT NOT NULL,
	algorithm_oid    TEXT NOT NULL,
	digest_algorithm TEXT NOT NULL,
	digest_oid       TEXT NOT NULL,
	document_digest  BLOB NOT NULL,
	document_id      TEXT NOT NULL,
	signature        BLOB NOT NULL,
	release          TEXT NOT NULL,
	instance         TEXT NOT NULL,
	audit_index      INTEGER NOT NULL,
	signed_at        INTEGER NOT NULL,
	UNIQUE (tenant_id, idempotency_key)
);
CREATE UNIQUE INDEX signatures_audit_index ON signatures (audit_index);

-- idx is the rowid: MAX(idx) is O(1) and rows are stored in log order.
CREATE TABLE audit_events (
	idx       INTEGER PRIMARY KEY CHECK (idx >= 0),
	time      INTEGER NOT NULL,
	type      TEXT NOT NULL,
	actor     TEXT NOT NULL,
	tenant_id TEXT NOT NULL,
	release   TEXT NOT NULL,
	instance  TEXT NOT NULL,
	subject   TEXT NOT NULL,
	entry     BLOB NOT NULL
);
CREATE INDEX audit_events_tenant_type ON audit_events (tenant_id, type);

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
	SELECT RAISE(ABORT, 'audit_events is append-only');
END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
	SELECT RAISE(ABORT, 'audit_events is append-only');
END;

CREATE TABLE tree_hashes (
	idx  INTEGER PRIMARY KEY,
	hash BLOB NOT NULL CHECK (length(hash) = 32)
);

CREATE TABLE tree_state (
	id   INTEGER PRIMARY KEY CHECK (id = 1),
	size INTEGER NOT NULL CHECK (size >= 0)
);
INSERT INTO tree_state (id, size) VALUES (1, 0);

CREATE TABLE checkpoints (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	size       INTEGER NOT NULL,
	note       BLOB NOT NULL,
	created_at INTEGER NOT NULL
);
CREATE INDEX checkpoints_size ON checkpoints (size);

-- Signatures are never rewritten (remediation is a new signature or event).
CREATE TRIGGER signatures_no_update BEFORE UPDATE ON signatures
BEGIN
	SELECT RAISE(ABORT, 'signatures are never rewritten');
END;
CREATE TRIGGER signatures_no_delete BEFORE DELETE ON signatures
BEGIN
	SELECT RAISE(ABORT, 'signatures are never rewritten');
END;
