-- What became of an event or an email is a narrow row of its own, inserted
-- once; the event and email rows are written once and kept as they arrived
-- (see the PostgreSQL migration). An event or email without an outcome is
-- pending.

CREATE TABLE stripe_event_outcomes (
    event_id      TEXT    PRIMARY KEY REFERENCES stripe_events (id),
    status        TEXT    NOT NULL CHECK (status IN ('applied', 'ignored', 'stale')),
    processed_at  INTEGER NOT NULL
) STRICT;

INSERT INTO stripe_event_outcomes (event_id, status, processed_at)
    SELECT id, status, COALESCE(processed_at, received_at) FROM stripe_events WHERE status <> 'pending';

ALTER TABLE stripe_events DROP COLUMN status;
ALTER TABLE stripe_events DROP COLUMN processed_at;

CREATE TABLE outbox_email_outcomes (
    email_id    INTEGER PRIMARY KEY REFERENCES outbox_emails (id),
    status      TEXT    NOT NULL CHECK (status IN ('sent', 'failed')),
    -- Attempts in all, this one included.
    attempts    INTEGER NOT NULL CHECK (attempts >= 0),
    -- Why it failed; NULL when sent.
    error       TEXT,
    decided_at  INTEGER NOT NULL
) STRICT;

INSERT INTO outbox_email_outcomes (email_id, status, attempts, error, decided_at)
    SELECT id, status, attempts, CASE status WHEN 'failed' THEN last_error END, COALESCE(sent_at, created_at)
    FROM outbox_emails WHERE status <> 'pending';

ALTER TABLE outbox_emails DROP COLUMN status;
ALTER TABLE outbox_emails DROP COLUMN sent_at;

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
