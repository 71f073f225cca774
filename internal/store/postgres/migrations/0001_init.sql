-- Schema 1: the initial schema. Tables live in the connection's
-- search_path schema.

CREATE TABLE tenants (
	id         text PRIMARY KEY,
	name       text NOT NULL,
	created_at timestamptz NOT NULL
);

CREATE TABLE tokens (
	id          text PRIMARY KEY,
	tenant_id   text NOT NULL,
	secret_hash bytea NOT NULL,
	created_at  timestamptz NOT NULL,
	revoked     boolean NOT NULL DEFAULT false
);
CREATE INDEX tokens_tenant ON tokens (tenant_id);

CREATE TABLE key_versions (
	tenant_id      text NOT NULL,
	name           text NOT NULL,
	version        integer NOT NULL CHECK (version >= 1),
	algorithm      text NOT NULL,
	provider_uri   text NOT NULL,
	public_key_pem text NOT NULL,
	cert_chain_pem text NOT NULL,
	state          text NOT NULL CHECK (state IN ('enabled', 'disabled', 'destroyed')),
	created_at     timestamptz NOT NULL,
	PRIMARY KEY (tenant_id, name, version)
);

CREATE TABLE settings (
	name       text PRIMARY KEY,
	value      text NOT NULL,
	updated_at timestamptz NOT NULL
);

CREATE TABLE signatures (
	id               text PRIMARY KEY,
	tenant_id        text NOT NULL,
	idempotency_key  text NOT NULL,
	request_hash     bytea NOT NULL,
	key_name         text NOT NULL,
	key_version      integer NOT NULL,
	format           text NOT NULL,
	algorithm        text NOT NULL,
	algorithm_oid    text NOT NULL,
	digest_algorithm text NOT NULL,
	digest_oid       text NOT NULL,
	document_digest  bytea NOT NULL,
	document_id      text NOT NULL,
	signature        bytea NOT NULL,
	release          text NOT NULL,
	instance         text NOT NULL,
	audit_index      bigint NOT NULL,
	signed_at        timestamptz NOT NULL,
	UNIQUE (tenant_id, idempotency_key)
);
CREATE UNIQUE INDEX signatures_audit_index ON signatures (audit_index);

CREATE TABLE audit_events (
	idx       bigint PRIMARY KEY CHECK (idx >= 0),
	time      timestamptz NOT NULL,
	type      text NOT NULL,
	actor     text NOT NULL,
	tenant_id text NOT NULL,
	release   text NOT NULL,
	instance  text NOT NULL,
	subject   text NOT NULL,
	entry     bytea NOT NULL
);
CREATE INDEX audit_events_tenant_type ON audit_events (tenant_id, type);

-- The next audit index. Every transaction that appends events locks this
-- row first and updates it before commit, so writers are serialised and
-- index order is commit order, across connections and processes.
CREATE TABLE audit_head (
	id   boolean PRIMARY KEY DEFAULT true CHECK (id),
	next bigint NOT NULL CHECK (next >= 0)
);
INSERT INTO audit_head (id, next) VALUES (true, 0);

CREATE FUNCTION countersign_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
		USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
	FOR EACH ROW EXECUTE FUNCTION countersign_immutable();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
	FOR EACH STATEMENT EXECUTE FUNCTION countersign_immutable();
CREATE TRIGGER signatures_append_only BEFORE UPDATE OR DELETE ON signatures
	FOR EACH ROW EXECUTE FUNCTION countersign_immutable();
CREATE TRIGGER signatures_no_truncate BEFORE TRUNCATE ON signatures
	FOR EACH STATEMENT EXECUTE FUNCTION countersign_immutable();

CREATE TABLE tree_hashes (
	idx  bigint PRIMARY KEY,
	hash bytea NOT NULL CHECK (length(hash) = 32)
);

CREATE TABLE tree_state (
	id   boolean PRIMARY KEY DEFAULT true CHECK (id),
	size bigint NOT NULL CHECK (size >= 0)
);
INSERT INTO tree_state (id, size) VALUES (true, 0);

CREATE TABLE checkpoints (
	id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	size       bigint NOT NULL,
	note       bytea NOT NULL,
	created_at timestamptz NOT NULL
);
CREATE INDEX checkpoints_size ON checkpoints (size);
