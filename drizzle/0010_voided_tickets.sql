-- Tickets ended without a sale by the resolver of tickets in doubt (service/doubt-resolver.ts):
-- their user was told the item's "sold out" or "closed" (or "blocked") because Postgres held no
-- row for them. A job of theirs that stalled past its lease and the resolver's grace may still come
-- to sell afterwards; this row makes Postgres refuse that sale, so what the user was told stays
-- true. Written under the item's stock lock in the transaction that found no row, so a sale either
-- committed before it (and was seen) or comes after it (and is refused).
CREATE TABLE IF NOT EXISTS voided_tickets (
  ticket_id text PRIMARY KEY,
  item_id text NOT NULL,
  voided_at timestamptz NOT NULL DEFAULT now()
);
--> statement-breakpoint
-- Every insert of an order or claim skips a voided ticket's row, whichever function makes it: the
-- sell functions then count it among the unsold (no unit is taken) and the *_many wrappers below
-- name it 'void'. The probe is one primary-key lookup in a table that is nearly always empty.
CREATE OR REPLACE FUNCTION floodgate_refuse_voided() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM voided_tickets v WHERE v.ticket_id = NEW.ticket_id) THEN
    RETURN NULL;
  END IF;
  RETURN NEW;
END
$$;
--> statement-breakpoint
DROP TRIGGER IF EXISTS orders_refuse_voided ON orders;
--> statement-breakpoint
CREATE TRIGGER orders_refuse_voided BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION floodgate_refuse_voided();
--> statement-breakpoint
DROP TRIGGER IF EXISTS coupon_claims_refuse_voided ON coupon_claims;
--> statement-breakpoint
CREATE TRIGGER coupon_claims_refuse_voided BEFORE INSERT ON coupon_claims FOR EACH ROW EXECUTE FUNCTION floodgate_refuse_voided();
--> statement-breakpoint
-- Whether a ticket is voided, as of now: a plpgsql function (never inlined, volatile) reads with a
-- snapshot of its own. The wrappers below ask it after the sell function, whose call waited for the
-- stock lock; an EXISTS written in their query would read with the query's snapshot, taken before
-- that wait, and miss a void committed during it (the row skipped, the answer 'sold_out').
CREATE OR REPLACE FUNCTION floodgate_voided(p_ticket text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  RETURN EXISTS (SELECT 1 FROM voided_tickets v WHERE v.ticket_id = p_ticket);
END
$$;
--> statement-breakpoint
-- The wrappers of 0009, naming a voided ticket's answer 'void' (the sell function, which never
-- saw its row, says 'sold_out' or 'limit_reached').
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
    RETURN QUERY SELECT g.it, s.ticket_id,
      CASE WHEN s.kind IN ('sold_out', 'limit_reached') AND floodgate_voided(s.ticket_id) THEN 'void' ELSE s.kind END,
      s.id, s.units_left, s.units_reserved, s.reserved_until
    FROM floodgate_sell_orders(g.it, g.us, g.ts, g.ps, p_reserve_ms) s;
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
    RETURN QUERY SELECT g.it, s.ticket_id,
      CASE WHEN s.kind IN ('sold_out', 'limit_reached') AND floodgate_voided(s.ticket_id) THEN 'void' ELSE s.kind END,
      s.id, s.units_left
    FROM floodgate_sell_claims(g.it, g.us, g.ts, p_per_user) s;
  END LOOP;
END
$$;
--> statement-breakpoint
-- CREATE OR REPLACE resets a function's settings: the generic plan of 0009 again.
ALTER FUNCTION floodgate_sell_orders_many(text[], text[], text[], text[], bigint) SET plan_cache_mode = force_generic_plan;
--> statement-breakpoint
ALTER FUNCTION floodgate_sell_claims_many(text[], text[], text[], integer) SET plan_cache_mode = force_generic_plan;
