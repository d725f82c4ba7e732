-- Refunds of membership payments: how much of an invoice's charge has been
-- returned (Stripe's charge.amount_refunded is cumulative), and the
-- PaymentIntent that paid it, so a charge's events find their membership
-- even before the payment is recorded.
ALTER TABLE membership_invoices ADD COLUMN amount_refunded BIGINT NOT NULL DEFAULT 0 CHECK (amount_refunded >= 0);
ALTER TABLE membership_invoices ADD COLUMN stripe_payment_intent_id TEXT;
CREATE INDEX membership_invoices_charge ON membership_invoices (stripe_charge_id);
CREATE INDEX membership_invoices_payment_intent ON membership_invoices (stripe_payment_intent_id);
