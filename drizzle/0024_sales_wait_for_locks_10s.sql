-- A sale waits at most 10 s for a lock (an operator's LOCK TABLE, a VACUUM FULL, an ALTER TABLE or
-- a held row of item_stock), then Postgres ends it with lock_not_available (55P03), which the
-- daemon reads as busy: the sale pauses and is asked again. Before, the daemon gave the waiting
-- connection up after FLOODGATE_PG_TIMEOUT_MS (15 s) of silence and opened another, while the
-- server kept the abandoned session waiting on the lock until it went: up to ten more sessions
-- every 15 s per daemon, for as long as the lock was held (a review's two-minute lock: 4 -> 20).
ALTER FUNCTION floodgate_sell_orders_many(text[], text[], text[], text[], bigint) SET lock_timeout = '10s';
--> statement-breakpoint
ALTER FUNCTION floodgate_sell_claims_many(text[], text[], text[], integer) SET lock_timeout = '10s';
