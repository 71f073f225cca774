-- Schema 2 (expand only): async jobs, playbook run journals, incidents, and
-- an index for reconciling a release's signatures. Nothing of schema 1 is
-- changed, so a schema-1 binary could run on it if its release declared
-- SchemaMax = 2.

CREATE TABLE jobs (
	id              text PRIMARY KEY,
	tenant_id       text NOT NULL,
	idempotency_key text NOT NULL,
	request_hash    bytea NOT NULL,
	request         bytea NOT NULL,
	state           text NOT NULL CHECK (state IN ('accepted', 'signed', 'failed')),
	signature_id    text NOT NULL DEFAULT '',
	error           text NOT NULL DEFAULT '',
	callback_url    text NOT NULL DEFAULT '',
	release         text NOT NULL,
	instance        text NOT NULL,
	accepted_at     timestamptz NOT NULL,
	finished_at     timestamptz,
	attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
	UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX jobs_state_accepted ON jobs (state, accepted_at, id);

-- A finished job keeps its outcome; jobs are never deleted.
CREATE FUNCTION countersign_job_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF OLD.state <> 'accepted' AND (NEW.state IS DISTINCT FROM OLD.state
		OR NEW.signature_id IS DISTINCT FROM OLD.signature_id OR NEW.error IS DISTINCT FROM OLD.error
		OR NEW.finished_at IS DISTINCT FROM OLD.finished_at) THEN
		RAISE EXCEPTION 'job %: a finished job keeps its outcome', OLD.id USING ERRCODE = 'insufficient_privilege';
	END IF;
	RETURN NEW;
END;
$$;
CREATE TRIGGER jobs_final BEFORE UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION countersign_job_final();
CREATE TRIGGER jobs_no_delete BEFORE DELETE ON jobs FOR EACH ROW EXECUTE FUNCTION countersign_immutable();
CREATE TRIGGER jobs_no_truncate BEFORE TRUNCATE ON jobs FOR EACH STATEMENT EXECUTE FUNCTION countersign_immutable();

-- audit_index is the index of the record's audit event: unique, and the
-- order runs were started in.
CREATE TABLE playbook_journal (
	run_id      text NOT NULL,
	seq         bigint NOT NULL CHECK (seq >= 0),
	rec         bytea NOT NULL,
	audit_index bigint NOT NULL UNIQUE,
	PRIMARY KEY (run_id, seq)
);
CREATE TRIGGER playbook_journal_append_only BEFORE UPDATE OR DELETE ON playbook_journal
	FOR EACH ROW EXECUTE FUNCTION countersign_immutable();
CREATE TRIGGER playbook_journal_no_truncate BEFORE TRUNCATE ON playbook_journal
	FOR EACH STATEMENT EXECUTE FUNCTION countersign_immutable();

CREATE TABLE incidents (
	id             text PRIMARY KEY,
	classification text NOT NULL,
	state          text NOT NULL CHECK (state IN ('open', 'contained', 'restored', 'closed')),
	release        text NOT NULL,
	commander      text NOT NULL,
	summary        text NOT NULL,
	opened_at      timestamptz NOT NULL,
	updated_at     timestamptz NOT NULL,
	closed_at      timestamptz,
	details        bytea NOT NULL
);
CREATE INDEX incidents_opened ON incidents (opened_at, id);
CREATE TRIGGER incidents_no_delete BEFORE DELETE ON incidents FOR EACH ROW EXECUTE FUNCTION countersign_immutable();

CREATE INDEX signatures_release ON signatures (release, id COLLATE "C");
CREATE INDEX tenants_created ON tenants (created_at, id);
