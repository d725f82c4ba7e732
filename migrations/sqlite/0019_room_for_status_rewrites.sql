-- PostgreSQL leaves room on the pages of stripe_events and outbox_emails
-- for the rewrite of each row's status; SQLite has no such setting.
SELECT 1;
