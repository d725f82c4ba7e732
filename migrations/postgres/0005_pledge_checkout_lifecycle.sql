-- A pledge whose charge failed may be paid on-session through a Checkout
-- session opened from its pay link. Only one such session is open at a time:
-- the previous one is expired at the gateway before a new one is opened.
ALTER TABLE pledges ADD COLUMN pay_checkouts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE pledges ADD COLUMN pay_session_id TEXT;
