-- messaging: the job queue, the Stripe event inbox, the email outbox and
-- outgoing webhooks.

CREATE TABLE jobs (
    id            BIGSERIAL PRIMARY KEY,
    kind          TEXT        NOT NULL,
    payload       TEXT        NOT NULL,
    state         TEXT        NOT NULL CHECK (state IN ('ready', 'running', 'dead')),
    attempts      INTEGER     NOT NULL DEFAULT 0,
    max_attempts  INTEGER     NOT NULL,
    run_at        TIMESTAMPTZ NOT NULL,
    lease_until   TIMESTAMPTZ,
    lease_token   TEXT,
    locked_by     TEXT,
    last_error    TEXT,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);

CREATE INDEX jobs_ready ON jobs (run_at) WHERE state = 'ready';
CREATE INDEX jobs_leased ON jobs (lease_until) WHERE state = 'running';

CREATE TABLE stripe_events (
    id            TEXT        PRIMARY KEY,
    event_type    TEXT        NOT NULL,
    object_id     TEXT,
    created       TIMESTAMPTZ NOT NULL,
    livemode      BOOLEAN     NOT NULL,
    payload       TEXT        NOT NULL,
    received_at   TIMESTAMPTZ NOT NULL,
    received_via  TEXT        NOT NULL CHECK (received_via IN ('webhook', 'backfill')),
    status        TEXT        NOT NULL CHECK (status IN ('pending', 'applied', 'ignored', 'stale')),
    processed_at  TIMESTAMPTZ,
    last_error    TEXT
);

CREATE INDEX stripe_events_object ON stripe_events (object_id, created);

CREATE TABLE stripe_object_versions (
    object_id     TEXT        PRIMARY KEY,
    last_created  TIMESTAMPTZ NOT NULL,
    last_event_id TEXT        NOT NULL
);

CREATE TABLE outbox_emails (
    id               BIGSERIAL PRIMARY KEY,
    idempotency_key  TEXT        NOT NULL UNIQUE,
    to_address       TEXT        NOT NULL,
    to_name          TEXT,
    locale           TEXT        NOT NULL CHECK (locale IN ('ja', 'en')),
    template         TEXT        NOT NULL,
    data             TEXT        NOT NULL,
    message_id       TEXT        NOT NULL UNIQUE,
    status           TEXT        NOT NULL CHECK (status IN ('pending', 'sent', 'failed')),
    attempts         INTEGER     NOT NULL DEFAULT 0,
    last_error       TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    sent_at          TIMESTAMPTZ
);

CREATE TABLE webhook_endpoints (
    id           BIGSERIAL PRIMARY KEY,
    org_id       BIGINT      NOT NULL REFERENCES organisations (id),
    url          TEXT        NOT NULL,
    secret       TEXT        NOT NULL,
    event_kinds  TEXT        NOT NULL,
    active       BOOLEAN     NOT NULL DEFAULT TRUE,
    created_at   TIMESTAMPTZ NOT NULL
);

CREATE TABLE webhook_deliveries (
    id               BIGSERIAL PRIMARY KEY,
    endpoint_id      BIGINT      NOT NULL REFERENCES webhook_endpoints (id),
    event_id         TEXT        NOT NULL,
    event_kind       TEXT        NOT NULL,
    payload          TEXT        NOT NULL,
    status           TEXT        NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER     NOT NULL DEFAULT 0,
    last_status_code INTEGER,
    last_error       TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    delivered_at     TIMESTAMPTZ,
    UNIQUE (endpoint_id, event_id)
);

CREATE TABLE webhook_delivery_attempts (
    id            BIGSERIAL PRIMARY KEY,
    delivery_id   BIGINT      NOT NULL REFERENCES webhook_deliveries (id),
    attempted_at  TIMESTAMPTZ NOT NULL,
    status_code   INTEGER,
    error         TEXT,
    duration_ms   BIGINT      NOT NULL
);

CREATE INDEX webhook_delivery_attempts_delivery ON webhook_delivery_attempts (delivery_id, id);
