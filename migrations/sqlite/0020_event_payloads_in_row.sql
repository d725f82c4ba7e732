-- On PostgreSQL, event payloads are kept compressed in their rows. SQLite
-- stores a row's values together already.
SELECT 1;
