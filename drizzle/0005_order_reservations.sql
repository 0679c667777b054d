-- Reservations (seckill with config.reserveMs): a sale makes the order 'reserved' until
-- reserved_until; the shop then confirms it (paid) or releases it, and a reservation neither
-- confirmed nor released by its deadline is released by whichever daemon sees it first.
-- Order states: reserved -> confirmed | released, nothing else (a trigger says so). Orders of
-- items without reservations are 'confirmed' at once, as every order before this migration was.
ALTER TABLE orders ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT 'confirmed';
--> statement-breakpoint
ALTER TABLE orders ADD COLUMN IF NOT EXISTS reserved_until timestamp with time zone;
--> statement-breakpoint
ALTER TABLE orders ADD COLUMN IF NOT EXISTS settled_at timestamp with time zone;
--> statement-breakpoint
-- Set once a released order's unit is back in the Redis counter (and its buyer may join again):
-- a daemon killed between the release and that step leaves it null, and any daemon's sweeper
-- finishes the step (the Redis side is idempotent per order).
ALTER TABLE orders ADD COLUMN IF NOT EXISTS returned_at timestamp with time zone;
--> statement-breakpoint
ALTER TABLE orders ADD CONSTRAINT orders_status_check CHECK (status IN ('reserved', 'confirmed', 'released') AND (status <> 'reserved' OR reserved_until IS NOT NULL));
--> statement-breakpoint
-- One live order per user and item: a released order no longer counts, so its user may buy again.
ALTER TABLE orders DROP CONSTRAINT IF EXISTS orders_item_user_key;
--> statement-breakpoint
CREATE UNIQUE INDEX IF NOT EXISTS orders_item_user_live_key ON orders (item_id, user_id) WHERE status <> 'released';
--> statement-breakpoint
-- What the expiry sweeper reads: only reservations, by deadline.
CREATE INDEX IF NOT EXISTS orders_reserved_due_idx ON orders (reserved_until) WHERE status = 'reserved';
--> statement-breakpoint
CREATE INDEX IF NOT EXISTS orders_unreturned_idx ON orders (order_id) WHERE status = 'released' AND returned_at IS NULL;
--> statement-breakpoint
CREATE OR REPLACE FUNCTION floodgate_orders_status_moves() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.status IS DISTINCT FROM OLD.status AND OLD.status <> 'reserved' THEN
    RAISE EXCEPTION 'order % cannot go from % to %', OLD.order_id, OLD.status, NEW.status USING ERRCODE = 'check_violation';
  END IF;
  RETURN NEW;
END
$$;
--> statement-breakpoint
CREATE TRIGGER orders_status_moves BEFORE UPDATE OF status ON orders FOR EACH ROW EXECUTE FUNCTION floodgate_orders_status_moves();
--> statement-breakpoint
-- item_stock.sold counts live orders (reserved + confirmed); `reserved` counts those not yet
-- confirmed. Units are conserved: confirmed + reserved + (total - sold) = total. "Sold out" is
-- total = sold with nothing reserved.
ALTER TABLE item_stock ADD COLUMN IF NOT EXISTS reserved integer NOT NULL DEFAULT 0;
--> statement-breakpoint
ALTER TABLE item_stock ADD CONSTRAINT item_stock_reserved_within_sold CHECK (reserved >= 0 AND reserved <= sold);
--> statement-breakpoint
-- The sell function of 0004, with reservations: p_reserve_ms (null: none) makes new orders
-- 'reserved' until now() + p_reserve_ms; a user's earlier order counts only while it is live; every
-- row also says how many units are reserved after the batch, so a caller tells "held" (no unit
-- free, some reserved: wait) from "sold out" (no unit free, none reserved).
DROP FUNCTION IF EXISTS floodgate_sell_orders(text, text[], text[], text[]);
--> statement-breakpoint
CREATE FUNCTION floodgate_sell_orders(p_item text, p_users text[], p_tickets text[], p_payloads text[], p_reserve_ms bigint)
RETURNS TABLE (ticket_id text, kind text, id text, units_left bigint, units_reserved bigint, reserved_until timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
  v_left bigint := floodgate_lock_stock(p_item);
  v_until timestamptz := CASE WHEN p_reserve_ms IS NULL THEN NULL ELSE now() + p_reserve_ms * interval '1 millisecond' END;
  v_reserved bigint := coalesce((SELECT s.reserved FROM item_stock s WHERE s.item_id = p_item), 0);
BEGIN
  RETURN QUERY
  WITH req AS (
    SELECT r.u, r.t, r.p, r.ord FROM unnest(p_users, p_tickets, p_payloads) WITH ORDINALITY AS r(u, t, p, ord)
  ), prior AS (
    -- One unique-index probe per ticket and per user (see 0002 for why LATERAL … LIMIT 1).
    SELECT o.ticket_id, o.user_id, o.order_id, o.reserved_until FROM unnest(p_tickets) q(t)
      CROSS JOIN LATERAL (SELECT * FROM orders x WHERE x.ticket_id = q.t AND x.item_id = p_item LIMIT 1) o
    UNION
    SELECT o.ticket_id, o.user_id, o.order_id, o.reserved_until FROM unnest(p_users) q(u)
      CROSS JOIN LATERAL (SELECT * FROM orders x WHERE x.item_id = p_item AND x.user_id = q.u AND x.status <> 'released' LIMIT 1) o
  ), classed AS (
    SELECT req.*, pt.order_id AS prior_id, pt.user_id AS prior_user, pt.reserved_until AS prior_until, pu.user_id IS NOT NULL AS had
    FROM req
    LEFT JOIN prior pt ON pt.ticket_id = req.t
    LEFT JOIN (SELECT DISTINCT pr.user_id FROM prior pr) pu ON pu.user_id = req.u
  ), fresh AS (
    SELECT c.*, row_number() OVER (PARTITION BY c.u ORDER BY c.ord) AS nth FROM classed c WHERE c.prior_id IS NULL AND NOT c.had
  ), eligible AS (
    SELECT f.*, row_number() OVER (ORDER BY f.ord) AS k FROM fresh f WHERE f.nth = 1
  ), ins AS (
    INSERT INTO orders (item_id, user_id, ticket_id, payload, status, reserved_until)
    SELECT p_item, e.u, e.t, e.p::jsonb, CASE WHEN v_until IS NULL THEN 'confirmed' ELSE 'reserved' END, v_until
    FROM eligible e WHERE e.k <= v_left ORDER BY e.ord
    ON CONFLICT DO NOTHING
    RETURNING orders.ticket_id, orders.order_id
  ), upd AS (
    UPDATE item_stock SET sold = sold + (SELECT count(*) FROM ins),
      reserved = reserved + CASE WHEN v_until IS NULL THEN 0 ELSE (SELECT count(*) FROM ins) END
    WHERE item_stock.item_id = p_item
  ), buyers AS (
    SELECT DISTINCT r.u FROM ins i JOIN req r ON r.t = i.ticket_id
  )
  SELECT c.t,
    CASE WHEN c.prior_id IS NOT NULL AND c.prior_user = c.u THEN 'replay'
      WHEN c.prior_id IS NOT NULL THEN 'foreign'
      WHEN i.order_id IS NOT NULL THEN 'sold'
      WHEN c.had OR b.u IS NOT NULL THEN 'limit_reached' ELSE 'sold_out' END,
    (CASE WHEN c.prior_id IS NOT NULL AND c.prior_user = c.u THEN c.prior_id ELSE i.order_id END)::text,
    greatest(v_left - (SELECT count(*) FROM ins), 0)::bigint,
    (v_reserved + CASE WHEN v_until IS NULL THEN 0 ELSE (SELECT count(*) FROM ins) END)::bigint,
    CASE WHEN c.prior_id IS NOT NULL AND c.prior_user = c.u THEN c.prior_until WHEN i.order_id IS NOT NULL THEN v_until END
  FROM classed c LEFT JOIN ins i ON i.ticket_id = c.t LEFT JOIN buyers b ON b.u = c.u
  ORDER BY c.ord;
END
$$;
--> statement-breakpoint
-- Confirms (p_to = 'confirmed') or releases (p_to = 'released') one order, under its item's stock
-- lock (taken first, as the sell function does, so the two never wait on each other in opposite
-- order). Idempotent: asking for the state the order is in changes nothing (`changed` false).
-- A confirm of a reservation past its deadline releases it instead (outcome 'expired'), so a
-- late payment never takes a unit that may already be on sale again. Outcomes: 'confirmed',
-- 'released', 'expired' (confirm refused, the reservation ran out), 'conflict' (confirm of an
-- order released before its deadline, or release of a confirmed order), 'not_found'.
CREATE FUNCTION floodgate_settle_order(p_order bigint, p_to text)
RETURNS TABLE (outcome text, changed boolean, item_id text, user_id text, status text, units_left bigint, units_reserved bigint)
LANGUAGE plpgsql AS $$
DECLARE
  v_item text := (SELECT o.item_id FROM orders o WHERE o.order_id = p_order);
  o orders%ROWTYPE;
  v_out text;
  v_changed boolean := false;
  s item_stock%ROWTYPE;
BEGIN
  IF v_item IS NULL THEN
    RETURN QUERY SELECT 'not_found'::text, false, NULL::text, NULL::text, NULL::text, NULL::bigint, NULL::bigint;
    RETURN;
  END IF;
  PERFORM floodgate_lock_stock(v_item);
  SELECT * INTO o FROM orders x WHERE x.order_id = p_order FOR UPDATE;
  IF o.status = 'reserved' AND p_to = 'confirmed' AND o.reserved_until > now() THEN
    UPDATE orders SET status = 'confirmed', settled_at = now() WHERE orders.order_id = p_order;
    UPDATE item_stock SET reserved = reserved - 1 WHERE item_stock.item_id = v_item;
    v_out := 'confirmed'; v_changed := true;
  ELSIF o.status = 'reserved' THEN
    UPDATE orders SET status = 'released', settled_at = now() WHERE orders.order_id = p_order;
    UPDATE item_stock SET reserved = reserved - 1, sold = sold - 1 WHERE item_stock.item_id = v_item;
    v_out := CASE WHEN p_to = 'confirmed' THEN 'expired' ELSE 'released' END; v_changed := true;
  ELSIF o.status = p_to THEN
    v_out := p_to;
  ELSIF o.status = 'released' AND o.reserved_until IS NOT NULL AND o.settled_at >= o.reserved_until THEN
    v_out := 'expired';
  ELSE
    v_out := 'conflict';
  END IF;
  SELECT * INTO s FROM item_stock x WHERE x.item_id = v_item;
  RETURN QUERY SELECT v_out, v_changed, v_item, o.user_id,
    (SELECT x.status FROM orders x WHERE x.order_id = p_order), (s.total - s.sold)::bigint, s.reserved::bigint;
END
$$;
--> statement-breakpoint
-- Releases the reservations of one item whose deadline has passed, at most p_limit, under the
-- item's stock lock. Two daemons sweeping at once release each order once: the second waits for
-- the lock, then finds those orders no longer 'reserved'.
CREATE FUNCTION floodgate_expire_orders(p_item text, p_limit integer)
RETURNS TABLE (order_id bigint, user_id text)
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM floodgate_lock_stock(p_item);
  RETURN QUERY
  WITH due AS (
    SELECT x.order_id FROM orders x
    WHERE x.item_id = p_item AND x.status = 'reserved' AND x.reserved_until <= now()
    ORDER BY x.reserved_until LIMIT p_limit FOR UPDATE SKIP LOCKED
  ), rel AS (
    UPDATE orders SET status = 'released', settled_at = now() FROM due
    WHERE orders.order_id = due.order_id AND orders.status = 'reserved'
    RETURNING orders.order_id, orders.user_id
  ), upd AS (
    UPDATE item_stock SET reserved = reserved - (SELECT count(*) FROM rel), sold = sold - (SELECT count(*) FROM rel)
    WHERE item_stock.item_id = p_item
  )
  SELECT rel.order_id, rel.user_id FROM rel;
END
$$;
