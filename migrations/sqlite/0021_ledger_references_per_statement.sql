-- On PostgreSQL, the ledger's references are checked once per statement
-- instead of by foreign keys row by row. SQLite keeps its foreign keys: it
-- checks them in the same pass that writes the row.
SELECT 1;
