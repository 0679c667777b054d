-- The secret that signs an item's ticket ids, and the epoch their join times count from, kept
-- with the item: an item Redis lost (a flush, a restart without its data) and the daemon made
-- again from this row signs with the same secret, so the ids issued before still verify and are
-- answered from Postgres (ticket_outcomes, orders, coupon_claims) instead of 404. Null for an item
-- defined before this column; the daemon fills it from Redis (its live item) at its next start.
ALTER TABLE items ADD COLUMN IF NOT EXISTS secret text;
ALTER TABLE items ADD COLUMN IF NOT EXISTS epoch_ms bigint;
