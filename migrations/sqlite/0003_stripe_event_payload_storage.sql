-- PostgreSQL stores Stripe event payloads uncompressed from this version on;
-- SQLite never compresses them. Kept so both dialects share version numbers.
SELECT 1;
