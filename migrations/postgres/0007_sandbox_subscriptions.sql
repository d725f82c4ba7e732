-- The sandbox gateway learns subscriptions: a Checkout session may be in
-- subscription mode and name a recurring price; prices are remembered by
-- the idempotency key they were created with.
ALTER TABLE sandbox_sessions DROP CONSTRAINT sandbox_sessions_mode_check;
ALTER TABLE sandbox_sessions ADD CONSTRAINT sandbox_sessions_mode_check
    CHECK (mode IN ('payment', 'setup', 'subscription'));
ALTER TABLE sandbox_sessions ADD COLUMN price_id TEXT;

CREATE TABLE sandbox_prices (
    id               TEXT        PRIMARY KEY,
    idempotency_key  TEXT        NOT NULL UNIQUE,
    product          TEXT        NOT NULL,
    amount           BIGINT      NOT NULL CHECK (amount > 0),
    currency         TEXT        NOT NULL,
    reference        TEXT        NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL
);
