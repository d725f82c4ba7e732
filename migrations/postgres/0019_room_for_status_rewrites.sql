-- An event is rewritten once when it is applied (its status and when), and
-- an email once when it is sent; neither change touches an indexed column.
-- Room left on each page lets the new version stay beside the old one (a
-- heap-only update), so the table's indexes need no new entries. Rows
-- written before this keep their packed pages.
ALTER TABLE stripe_events SET (fillfactor = 80);
ALTER TABLE outbox_emails SET (fillfactor = 80);
