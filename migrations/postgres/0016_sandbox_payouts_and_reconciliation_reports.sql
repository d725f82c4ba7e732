-- The sandbox payment processor's payouts to the bank (owned by payments'
-- sandbox), so a sandbox-configured server reconciles against the sandbox
-- the way a Stripe-configured one does against Stripe: a payout pays out
-- the net of the charges and refunds created after the previous payout's
-- cut-off and up to its own.
CREATE TABLE sandbox_payouts (
    id               TEXT        PRIMARY KEY,
    idempotency_key  TEXT        NOT NULL UNIQUE,
    amount           BIGINT      NOT NULL CHECK (amount > 0),
    currency         TEXT        NOT NULL,
    covers_from      TIMESTAMPTZ,
    covers_until     TIMESTAMPTZ NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL
);

-- The last reconciliation's report per organisation (owned by ledger), as
-- the console shows it: the unmatched objects on either side with their
-- amounts, as JSON, and which processor it was read from.
CREATE TABLE reconciliation_reports (
    org_id      BIGINT      PRIMARY KEY REFERENCES organisations (id),
    ran_at      TIMESTAMPTZ NOT NULL,
    source      TEXT        NOT NULL,
    report      TEXT        NOT NULL
);
