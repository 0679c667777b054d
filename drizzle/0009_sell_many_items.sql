-- One call (one transaction, one commit) sells for many items: a batch of the writer spread over
-- 200 items made 200 calls, each its own commit, and Postgres spent 13x the CPU per order of a
-- sale of one item. Each item is sold by its own function exactly as before, in item id order, so
-- two batches lock the stock rows they share in the same order and never wait on each other in a
-- cycle. The requests keep their order within each item (first come, first sold).
CREATE OR REPLACE FUNCTION floodgate_sell_orders_many(p_items text[], p_users text[], p_tickets text[], p_payloads text[], p_reserve_ms bigint)
RETURNS TABLE (item_id text, ticket_id text, kind text, id text, units_left bigint, units_reserved bigint, reserved_until timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
  g record;
BEGIN
  FOR g IN
    SELECT q.it, array_agg(q.u ORDER BY q.ord) AS us, array_agg(q.t ORDER BY q.ord) AS ts, array_agg(q.p ORDER BY q.ord) AS ps
    FROM unnest(p_items, p_users, p_tickets, p_payloads) WITH ORDINALITY AS q(it, u, t, p, ord)
    GROUP BY q.it ORDER BY q.it
  LOOP
    RETURN QUERY SELECT g.it, s.* FROM floodgate_sell_orders(g.it, g.us, g.ts, g.ps, p_reserve_ms) s;
  END LOOP;
END
$$;
--> statement-breakpoint
CREATE OR REPLACE FUNCTION floodgate_sell_claims_many(p_items text[], p_users text[], p_tickets text[], p_per_user integer)
RETURNS TABLE (item_id text, ticket_id text, kind text, id text, units_left bigint)
LANGUAGE plpgsql AS $$
DECLARE
  g record;
BEGIN
  FOR g IN
    SELECT q.it, array_agg(q.u ORDER BY q.ord) AS us, array_agg(q.t ORDER BY q.ord) AS ts
    FROM unnest(p_items, p_users, p_tickets) WITH ORDINALITY AS q(it, u, t, ord)
    GROUP BY q.it ORDER BY q.it
  LOOP
    RETURN QUERY SELECT g.it, s.* FROM floodgate_sell_claims(g.it, g.us, g.ts, p_per_user) s;
  END LOOP;
END
$$;
--> statement-breakpoint
-- The sell statements are planned once per connection, not at every call: with the default plan
-- cache mode Postgres planned the sell CTE afresh each time (a custom plan, ~1 ms), which cost
-- ~200 ms per batch of 250 tickets over 200 items against ~50 ms with the generic plan; the
-- statement's index probes (see 0002) need no parameter values to be planned well.
ALTER FUNCTION floodgate_sell_orders(text, text[], text[], text[], bigint) SET plan_cache_mode = force_generic_plan;
--> statement-breakpoint
ALTER FUNCTION floodgate_sell_claims(text, text[], text[], integer) SET plan_cache_mode = force_generic_plan;
--> statement-breakpoint
ALTER FUNCTION floodgate_sell_orders_many(text[], text[], text[], text[], bigint) SET plan_cache_mode = force_generic_plan;
--> statement-breakpoint
ALTER FUNCTION floodgate_sell_claims_many(text[], text[], text[], integer) SET plan_cache_mode = force_generic_plan;
