-- The sandbox gateway learns subscriptions: a Checkout session may be in
-- subscription mode and name a recurring price; prices are remembered by
-- the idempotency key they were created with.
-- SQLite cannot change a CHECK constraint, so the sessions table is rebuilt.
CREATE TABLE sandbox_sessions_new (
    id               TEXT        PRIMARY KEY,
    idempotency_key  TEXT        NOT NULL UNIQUE,
    mode             TEXT        NOT NULL CHECK (mode IN ('payment', 'setup', 'subscription')),
    amount           INTEGER     NOT NULL,
    currency         TEXT        NOT NULL,
    description      TEXT        NOT NULL,
    email            TEXT        NOT NULL,
    reference        TEXT        NOT NULL,
    success_url      TEXT        NOT NULL,
    cancel_url       TEXT        NOT NULL,
    status           TEXT        NOT NULL CHECK (status IN ('open', 'complete', 'expired')),
    created_at       INTEGER     NOT NULL,
    price_id         TEXT
) STRICT;

INSERT INTO sandbox_sessions_new (id, idempotency_key, mode, amount, currency, description, email, reference,
    success_url, cancel_url, status, created_at)
SELECT id, idempotency_key, mode, amount, currency, description, email, reference, success_url, cancel_url, status,
    created_at
FROM sandbox_sessions;

DROP TABLE sandbox_sessions;
ALTER TABLE sandbox_sessions_new RENAME TO sandbox_sessions;

CREATE TABLE sandbox_prices (
    id               TEXT        PRIMARY KEY,
    idempotency_key  TEXT        NOT NULL UNIQUE,
    product          TEXT        NOT NULL,
    amount           INTEGER     NOT NULL CHECK (amount > 0),
    currency         TEXT        NOT NULL,
    reference        TEXT        NOT NULL,
    created_at       INTEGER     NOT NULL
) STRICT;
