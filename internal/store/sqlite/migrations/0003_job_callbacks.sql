-- Schema 3 (expand only): callback delivery state of async jobs, so a
-- callback lost to a crash between the message's ack and its delivery is
-- sent again by the sweeper. New nullable/defaulted columns only: a schema-2
-- binary runs on it if its release declares SchemaMax = 3 (it does not
-- record deliveries, so callbacks of jobs it finishes may be sent again by a
-- schema-3 sweeper: callbacks are at-least-once).

ALTER TABLE jobs ADD COLUMN callback_delivered_at INTEGER;
ALTER TABLE jobs ADD COLUMN callback_attempts INTEGER NOT NULL DEFAULT 0 CHECK (callback_attempts >= 0);
ALTER TABLE jobs ADD COLUMN callback_last_at INTEGER;
CREATE INDEX jobs_callback_pending ON jobs (finished_at, id)
	WHERE callback_url <> '' AND callback_delivered_at IS NULL AND state <> 'accepted';
