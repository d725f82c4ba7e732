-- The scheduled reconciliation with Stripe: one row while it is armed. The
-- first process to start arms it and queues its job in one transaction, so
-- several processes never run parallel chains; a job that gives up disarms
-- it and the next start arms it again.
CREATE TABLE reconciliation_schedule (
    id              BIGINT PRIMARY KEY CHECK (id = 1),
    next_run_at     TIMESTAMPTZ NOT NULL,
    last_run_at     TIMESTAMPTZ,
    last_unmatched  BIGINT
);
