-- 0019 meant event payloads to stay in their rows once lz4 had compressed
-- them, but an invoice's event compresses to about 2 KB, just over the size
-- at which PostgreSQL moves a value out of line (TOAST_TUPLE_TARGET): every
-- payload was still written as two TOAST rows with two index entries, and
-- read back through that index. MAIN storage compresses a payload and keeps
-- it in the row unless the row could not fit a page. Where 0019 found no
-- lz4, payloads stay uncompressed and out of line (0003). Rows written
-- before this keep their storage.
DO $$
BEGIN
    IF (SELECT attcompression FROM pg_attribute
        WHERE attrelid = 'stripe_events'::regclass AND attname = 'payload') = 'l' THEN
        ALTER TABLE stripe_events ALTER COLUMN payload SET STORAGE MAIN;
    END IF;
END
$$;
