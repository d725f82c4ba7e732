-- messaging: the job queue, the Stripe event inbox, the email outbox and
-- outgoing webhooks. Timestamps are INTEGER microseconds since the epoch.

CREATE TABLE jobs (
    id            INTEGER PRIMARY KEY,
    kind          TEXT    NOT NULL,
    payload       TEXT    NOT NULL,
    state         TEXT    NOT NULL CHECK (state IN ('ready', 'running', 'dead')),
    attempts      INTEGER NOT NULL DEFAULT 0,
    max_attempts  INTEGER NOT NULL,
    run_at        INTEGER NOT NULL,
    lease_until   INTEGER,
    lease_token   TEXT,
    locked_by     TEXT,
    last_error    TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) STRICT;

CREATE INDEX jobs_ready ON jobs (run_at) WHERE state = 'ready';
CREATE INDEX jobs_leased ON jobs (lease_until) WHERE state = 'running';

CREATE TABLE stripe_events (
    id            TEXT    PRIMARY KEY,
    event_type    TEXT    NOT NULL,
    object_id     TEXT,
    created       INTEGER NOT NULL,
    livemode      INTEGER NOT NULL,
    payload       TEXT    NOT NULL,
    received_at   INTEGER NOT NULL,
    received_via  TEXT    NOT NULL CHECK (received_via IN ('webhook', 'backfill')),
    status        TEXT    NOT NULL CHECK (status IN ('pending', 'applied', 'ignored', 'stale')),
    processed_at  INTEGER,
    last_error    TEXT
) STRICT;

CREATE INDEX stripe_events_object ON stripe_events (object_id, created);

-- Per Stripe object, the newest event applied, so that handlers never let an
-- older event overwrite newer state.
CREATE TABLE stripe_object_versions (
    object_id     TEXT    PRIMARY KEY,
    last_created  INTEGER NOT NULL,
    last_event_id TEXT    NOT NULL
) STRICT;

CREATE TABLE outbox_emails (
    id               INTEGER PRIMARY KEY,
    idempotency_key  TEXT    NOT NULL UNIQUE,
    to_address       TEXT    NOT NULL,
    to_name          TEXT,
    locale           TEXT    NOT NULL CHECK (locale IN ('ja', 'en')),
    template         TEXT    NOT NULL,
    data             TEXT    NOT NULL,
    message_id       TEXT    NOT NULL UNIQUE,
    status           TEXT    NOT NULL CHECK (status IN ('pending', 'sent', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    sent_at          INTEGER
) STRICT;

CREATE TABLE webhook_endpoints (
    id           INTEGER PRIMARY KEY,
    org_id       INTEGER NOT NULL REFERENCES organisations (id),
    url          TEXT    NOT NULL,
    secret       TEXT    NOT NULL,
    event_kinds  TEXT    NOT NULL,
    active       INTEGER NOT NULL DEFAULT 1,
    created_at   INTEGER NOT NULL
) STRICT;

CREATE TABLE webhook_deliveries (
    id               INTEGER PRIMARY KEY,
    endpoint_id      INTEGER NOT NULL REFERENCES webhook_endpoints (id),
    event_id         TEXT    NOT NULL,
    event_kind       TEXT    NOT NULL,
    payload          TEXT    NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_status_code INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    delivered_at     INTEGER,
    UNIQUE (endpoint_id, event_id)
) STRICT;

CREATE TABLE webhook_delivery_attempts (
    id            INTEGER PRIMARY KEY,
    delivery_id   INTEGER NOT NULL REFERENCES webhook_deliveries (id),
    attempted_at  INTEGER NOT NULL,
    status_code   INTEGER,
    error         TEXT,
    duration_ms   INTEGER NOT NULL
) STRICT;

CREATE INDEX webhook_delivery_attempts_delivery ON webhook_delivery_attempts (delivery_id, id);
