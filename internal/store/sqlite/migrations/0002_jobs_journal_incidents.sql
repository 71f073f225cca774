-- Schema 2 (expand only): async jobs, playbook run journals, incidents, and
-- an index for reconciling a release's signatures. Nothing of schema 1 is
-- changed, so a schema-1 binary could run on it if its release declared
-- SchemaMax = 2.

CREATE TABLE jobs (
	id              TEXT PRIMARY KEY,
	tenant_id       TEXT NOT NULL,
	idempotency_key TEXT NOT NULL,
	request_hash    BLOB NOT NULL,
	request         BLOB NOT NULL,
	state           TEXT NOT NULL CHECK (state IN ('accepted', 'signed', 'failed')),
	signature_id    TEXT NOT NULL DEFAULT '',
	error           TEXT NOT NULL DEFAULT '',
	callback_url    TEXT NOT NULL DEFAULT '',
	release         TEXT NOT NULL,
	instance        TEXT NOT NULL,
	accepted_at     INTEGER NOT NULL,
	finished_at     INTEGER,
	attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
	UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX jobs_state_accepted ON jobs (state, accepted_at, id);

-- A finished job keeps its outcome; jobs are never deleted.
CREATE TRIGGER jobs_final BEFORE UPDATE ON jobs
WHEN OLD.state <> 'accepted' AND (NEW.state IS NOT OLD.state OR NEW.signature_id IS NOT OLD.signature_id
	OR NEW.error IS NOT OLD.error OR NEW.finished_at IS NOT OLD.finished_at)
BEGIN
	SELECT RAISE(ABORT, 'a finished job keeps its outcome');
END;
CREATE TRIGGER jobs_no_delete BEFORE DELETE ON jobs
BEGIN
	SELECT RAISE(ABORT, 'jobs are never deleted');
END;

-- audit_index is the index of the record's audit event: unique, and the
-- order runs were started in.
CREATE TABLE playbook_journal (
	run_id      TEXT NOT NULL,
	seq         INTEGER NOT NULL CHECK (seq >= 0),
	rec         BLOB NOT NULL,
	audit_index INTEGER NOT NULL UNIQUE,
	PRIMARY KEY (run_id, seq)
);
CREATE TRIGGER playbook_journal_no_update BEFORE UPDATE ON playbook_journal
BEGIN
	SELECT RAISE(ABORT, 'playbook_journal is append-only');
END;
CREATE TRIGGER playbook_journal_no_delete BEFORE DELETE ON playbook_journal
BEGIN
	SELECT RAISE(ABORT, 'playbook_journal is append-only');
END;

CREATE TABLE incidents (
	id             TEXT PRIMARY KEY,
	classification TEXT NOT NULL,
	state          TEXT NOT NULL CHECK (state IN ('open', 'contained', 'restored', 'closed')),
	release        TEXT NOT NULL,
	commander      TEXT NOT NULL,
	summary        TEXT NOT NULL,
	opened_at      INTEGER NOT NULL,
	updated_at     INTEGER NOT NULL,
	closed_at      INTEGER,
	details        BLOB NOT NULL
);
CREATE INDEX incidents_opened ON incidents (opened_at, id);
CREATE TRIGGER incidents_no_delete BEFORE DELETE ON incidents
BEGIN
	SELECT RAISE(ABORT, 'incidents are never deleted');
END;

CREATE INDEX signatures_release ON signatures (release, id);
CREATE INDEX tenants_created ON tenants (created_at, id);
