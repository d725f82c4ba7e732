-- A reward is retired rather than deleted: it takes no new pledges, and
-- the pledges that hold it keep it. NULL while it is offered.
ALTER TABLE campaign_rewards ADD COLUMN retired_at TIMESTAMPTZ;
