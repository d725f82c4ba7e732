-- Stripe event payloads (2-10 KB of JSON) are stored out of line without
-- compression: compressing each one cost more CPU on the webhook hot path
-- than the disk it saved.
ALTER TABLE stripe_events ALTER COLUMN payload SET STORAGE EXTERNAL;
