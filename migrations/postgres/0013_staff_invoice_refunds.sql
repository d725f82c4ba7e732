-- Refunds of membership invoices asked from the console or the API: the
-- same request rows as staff_refunds (0010) has for pledges, one per
-- request key, committed before the payment provider is called.
CREATE TABLE staff_invoice_refunds (
    request_key   TEXT        PRIMARY KEY,
    org_id        BIGINT      NOT NULL REFERENCES organisations (id),
    invoice_id    BIGINT      NOT NULL REFERENCES membership_invoices (id),
    amount        BIGINT      NOT NULL CHECK (amount > 0),
    currency      TEXT        NOT NULL,
    requested_by  TEXT        NOT NULL,
    status        TEXT        NOT NULL CHECK (status IN ('requested', 'succeeded', 'failed')),
    refund_id     TEXT,
    failure       TEXT,
    created_at    TIMESTAMPTZ NOT NULL
);

CREATE INDEX staff_invoice_refunds_invoice ON staff_invoice_refunds (invoice_id);
