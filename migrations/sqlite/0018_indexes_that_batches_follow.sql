-- An invoice is looked up by its charge or PaymentIntent, never by their
-- absence. Indexing only the rows that have one keeps "stripe_charge_id IS
-- NULL" (an invoice not recorded as paid yet) from being answered by
-- scanning every unpaid invoice: a batch of payments is then found through
-- the invoice ids it names.
DROP INDEX membership_invoices_charge;
DROP INDEX membership_invoices_payment_intent;
CREATE INDEX membership_invoices_charge ON membership_invoices (stripe_charge_id) WHERE stripe_charge_id IS NOT NULL;
CREATE INDEX membership_invoices_payment_intent ON membership_invoices (stripe_payment_intent_id)
    WHERE stripe_payment_intent_id IS NOT NULL;

-- Workers claim due jobs in (run_at, id) order. Indexed in that order, a
-- claim reads its batch off the front of the index; indexed by run_at
-- alone, it sorted every due job first, and a month-end backlog is tens of
-- thousands of them.
DROP INDEX jobs_ready;
DROP INDEX jobs_leased;
CREATE INDEX jobs_ready ON jobs (run_at, id) WHERE state = 'ready';
CREATE INDEX jobs_leased ON jobs (lease_until, id) WHERE state = 'running';

-- (PostgreSQL also leaves room on the memberships' pages for their
-- rewrites; SQLite has no such setting.)
