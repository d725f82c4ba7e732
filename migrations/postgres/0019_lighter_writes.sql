-- An event is rewritten once when it is applied (its status and when), and
-- an email once when it is sent; neither change touches an indexed column.
-- Room left on each page lets the new version stay beside the old one (a
-- heap-only update), so the table's indexes need no new entries. Rows
-- written before this keep their packed pages.
ALTER TABLE stripe_events SET (fillfactor = 80);
ALTER TABLE outbox_emails SET (fillfactor = 80);

-- At most one entry may reverse a given entry, and most entries reverse
-- none. A unique index of only the entries that reverse one keeps that rule
-- without an index entry for every other entry.
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_reverses_entry_id_key;
CREATE UNIQUE INDEX ledger_entries_reverses ON ledger_entries (reverses_entry_id) WHERE reverses_entry_id IS NOT NULL;
