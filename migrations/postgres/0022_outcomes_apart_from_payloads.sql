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
    event_id      TEXT        PRIMARY KEY REFERENCES stripe_events (id),
    status        TEXT        NOT NULL CHECK (status IN ('applied', 'ignored', 'stale')),
    processed_at  TIMESTAMPTZ NOT NULL
);

INSERT INTO stripe_event_outcomes (event_id, status, processed_at)
    SELECT id, status, COALESCE(processed_at, received_at) FROM stripe_events WHERE status <> 'pending';

ALTER TABLE stripe_events DROP COLUMN status, DROP COLUMN processed_at;
ALTER TABLE stripe_events RESET (fillfactor);

CREATE TABLE outbox_email_outcomes (
    email_id    BIGINT      PRIMARY KEY REFERENCES outbox_emails (id),
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
