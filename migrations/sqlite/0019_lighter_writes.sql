-- On PostgreSQL, stripe_events and outbox_emails leave room on their pages
-- for the rewrite of each row's status, and only entries that reverse
-- another are indexed for the one-reversal rule. SQLite has no fillfactor,
-- and its rule stays the column's UNIQUE constraint (dropping it would
-- rebuild the ledger's largest table).
SELECT 1;
