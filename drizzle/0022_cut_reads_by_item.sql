-- A cut after a Redis rollback looks at who bought (queue/definitions.ts, boughtWhileWaiting): an
-- item's latest live orders or claims and its latest succeeded ends. Without an index by item in
-- that order, Postgres either walked the primary key backwards past every newer row of other items
-- (240 ms with 1.5 M of them; the look gives up at 2 s and the cut goes on without it) or read and
-- sorted every row of the item (all of a 1.2 M-claim coupon item). Each read now takes its rows
-- from the index's end. CREATE INDEX (not CONCURRENTLY: migrations run in one transaction) holds
-- writes to the table while it builds: on a large table, run this between sales.
CREATE INDEX IF NOT EXISTS orders_item_live_order_idx ON orders (item_id, order_id) WHERE status <> 'released';
CREATE INDEX IF NOT EXISTS coupon_claims_item_claim_idx ON coupon_claims (item_id, claim_id);
CREATE INDEX IF NOT EXISTS ticket_outcomes_item_succeeded_idx ON ticket_outcomes (item_id, finished_at) WHERE status = 'succeeded';
