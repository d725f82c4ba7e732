-- A lost dispute takes a payment back from the salon for good: how much of
-- an invoice's charge was lost, so a patron's lifetime total counts it once.
ALTER TABLE membership_invoices ADD COLUMN amount_disputed_lost BIGINT NOT NULL DEFAULT 0
    CHECK (amount_disputed_lost >= 0);

-- Refund and dispute events that arrived before the invoice their charge
-- paid (Stripe does not promise an order): kept here and applied as soon as
-- invoice.paid names the PaymentIntent, or the payment names the charge.
CREATE TABLE membership_waiting_events (
    event_id           TEXT        PRIMARY KEY,
    event_type         TEXT        NOT NULL,
    charge_id          TEXT,
    payment_intent_id  TEXT,
    payload            TEXT        NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL
);

CREATE INDEX membership_waiting_events_charge ON membership_waiting_events (charge_id);
CREATE INDEX membership_waiting_events_payment_intent ON membership_waiting_events (payment_intent_id);
