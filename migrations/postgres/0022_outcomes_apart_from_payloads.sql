-- An event was rewritten when it was applied (its status and when), and an
-- email when it was sent: the whole row again, a 2 KB event payload or an
-- email's data, and on a full page a new entry in each of the table's
-- indexes. What became of an event or an email is now a narrow row of its
-- own, inserted once, and the event and email rows are written once and
-- kept as they arrived. An event or email without an outcome is pending.
--
-- An email that a mail server deferred stays pending: its attempts and last
-- error stay on its row, which is rewritten on each deferral (rare). An
-- event that failed keeps its last error on its row until it is applied.

CREATE TABLE stripe_event_outcomes (
    event_id      TEXT        PRIMARY KEY,
    status        TEXT        NOT NULL CHECK (status IN ('applied', 'ignored', 'stale')),
    processed_at  TIMESTAMPTZ NOT NULL
);

INSERT INTO stripe_event_outcomes (event_id, status, processed_at)
    SELECT id, status, COALESCE(processed_at, received_at) FROM stripe_events WHERE status <> 'pending';

ALTER TABLE stripe_events DROP COLUMN status, DROP COLUMN processed_at;
ALTER TABLE stripe_events RESET (fillfactor);

CREATE TABLE outbox_email_outcomes (
    email_id    BIGINT      PRIMARY KEY,
    status      TEXT        NOT NULL CHECK (status IN ('sent', 'failed')),
    -- Attempts in all, this one included.
    attempts    INTEGER     NOT NULL CHECK (attempts >= 0),
    -- Why it failed; NULL when sent.
    error       TEXT,
    decided_at  TIMESTAMPTZ NOT NULL
);

INSERT INTO outbox_email_outcomes (email_id, status, attempts, error, decided_at)
    SELECT id, status, attempts, CASE status WHEN 'failed' THEN last_error END, COALESCE(sent_at, created_at)
    FROM outbox_emails WHERE status <> 'pending';

ALTER TABLE outbox_emails DROP COLUMN status, DROP COLUMN sent_at;
ALTER TABLE outbox_emails RESET (fillfactor);

-- An outcome is of an event or email that exists, and an event or email
-- with an outcome cannot be deleted or given another id. A foreign key
-- would check the first by locking the event's or email's row (FOR KEY
-- SHARE), a write to its page for every outcome: the rewrite this migration
-- removes. The event and email rows are checked once per statement instead,
-- without a lock, as 0021 checks the ledger's references: neither table's
-- rows are deleted by kanpa, and the triggers below refuse it. The errors
-- carry the foreign-key SQLSTATE (23503).
CREATE FUNCTION messaging_outcomes_check_references() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    wanted_event TEXT;
    wanted_email BIGINT;
BEGIN
    IF TG_TABLE_NAME = 'stripe_event_outcomes' THEN
        FOR wanted_event IN SELECT event_id FROM new_outcomes LOOP
            PERFORM FROM stripe_events WHERE id = wanted_event;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'an outcome refers to event %, which is not in the inbox', wanted_event
                    USING ERRCODE = 'foreign_key_violation';
            END IF;
        END LOOP;
    ELSE
        FOR wanted_email IN SELECT email_id FROM new_outcomes LOOP
            PERFORM FROM outbox_emails WHERE id = wanted_email;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'an outcome refers to email %, which is not in the outbox', wanted_email
                    USING ERRCODE = 'foreign_key_violation';
            END IF;
        END LOOP;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER stripe_event_outcomes_references_inserted AFTER INSERT ON stripe_event_outcomes
    REFERENCING NEW TABLE AS new_outcomes
    FOR EACH STATEMENT EXECUTE FUNCTION messaging_outcomes_check_references();
CREATE TRIGGER stripe_event_outcomes_references_updated AFTER UPDATE ON stripe_event_outcomes
    REFERENCING NEW TABLE AS new_outcomes
    FOR EACH STATEMENT EXECUTE FUNCTION messaging_outcomes_check_references();
CREATE TRIGGER outbox_email_outcomes_references_inserted AFTER INSERT ON outbox_email_outcomes
    REFERENCING NEW TABLE AS new_outcomes
    FOR EACH STATEMENT EXECUTE FUNCTION messaging_outcomes_check_references();
CREATE TRIGGER outbox_email_outcomes_references_updated AFTER UPDATE ON outbox_email_outcomes
    REFERENCING NEW TABLE AS new_outcomes
    FOR EACH STATEMENT EXECUTE FUNCTION messaging_outcomes_check_references();

CREATE FUNCTION messaging_refuse_removing_decided() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.id = NEW.id THEN
        RETURN NEW;
    END IF;
    IF (TG_TABLE_NAME = 'stripe_events'
            AND EXISTS (SELECT 1 FROM stripe_event_outcomes WHERE event_id = OLD.id))
       OR (TG_TABLE_NAME = 'outbox_emails'
            AND EXISTS (SELECT 1 FROM outbox_email_outcomes WHERE email_id = OLD.id)) THEN
        RAISE EXCEPTION '% % has an outcome recorded', TG_TABLE_NAME, OLD.id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
END;
$$;

CREATE TRIGGER stripe_events_decided BEFORE UPDATE OF id OR DELETE ON stripe_events
    FOR EACH ROW EXECUTE FUNCTION messaging_refuse_removing_decided();
CREATE TRIGGER outbox_emails_decided BEFORE UPDATE OF id OR DELETE ON outbox_emails
    FOR EACH ROW EXECUTE FUNCTION messaging_refuse_removing_decided();

CREATE FUNCTION messaging_refuse_truncate_decided() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (TG_TABLE_NAME = 'stripe_events' AND EXISTS (SELECT 1 FROM stripe_event_outcomes))
       OR (TG_TABLE_NAME = 'outbox_emails' AND EXISTS (SELECT 1 FROM outbox_email_outcomes)) THEN
        RAISE EXCEPTION '% cannot be truncated while outcomes refer to it', TG_TABLE_NAME
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER stripe_events_no_truncate BEFORE TRUNCATE ON stripe_events
    FOR EACH STATEMENT EXECUTE FUNCTION messaging_refuse_truncate_decided();
CREATE TRIGGER outbox_emails_no_truncate BEFORE TRUNCATE ON outbox_emails
    FOR EACH STATEMENT EXECUTE FUNCTION messaging_refuse_truncate_decided();

-- What operators and reports read: each event and email with its state.
CREATE VIEW stripe_event_states AS
    SELECT e.*, COALESCE(o.status, 'pending') AS status, o.processed_at
    FROM stripe_events e LEFT JOIN stripe_event_outcomes o ON o.event_id = e.id;

CREATE VIEW outbox_email_states AS
    SELECT e.id, e.idempotency_key, e.to_address, e.to_name, e.locale, e.template, e.data, e.message_id,
           e.created_at, COALESCE(o.status, 'pending') AS status, COALESCE(o.attempts, e.attempts) AS attempts,
           CASE WHEN o.email_id IS NULL THEN e.last_error ELSE o.error END AS last_error,
           CASE o.status WHEN 'sent' THEN o.decided_at END AS sent_at
    FROM outbox_emails e LEFT JOIN outbox_email_outcomes o ON o.email_id = e.id;
