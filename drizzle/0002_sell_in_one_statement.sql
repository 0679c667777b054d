-- Sells a batch of one item's tickets in one call (one round trip, one implicit transaction):
-- the item's item_stock row is locked first, so Postgres alone decides what was sold. Per
-- request, in the batch's order: 'replay' (this ticket already has its row: a re-run after a
-- crash), 'sold', 'limit_reached' (the user has an order / all their claims, earlier or from this
-- batch), or 'sold_out'. Each statement after the lock sees what the transactions it waited for committed
-- (plpgsql in READ COMMITTED takes a fresh snapshot per statement). Ticket ids in a batch must be
-- distinct (the caller folds repeats). Under the lock no insert can conflict; ON CONFLICT DO
-- NOTHING only keeps a ticket id that somehow exists under another item from failing the batch
-- (that ticket is answered sold_out and gets no row).
-- Locks the item's stock row for the rest of the transaction and returns the units left (0 for an
-- item without one).
CREATE OR REPLACE FUNCTION floodgate_lock_stock(p_item text) RETURNS bigint
LANGUAGE sql AS $$
  SELECT coalesce((SELECT s.total - s.sold FROM item_stock s WHERE s.item_id = p_item FOR UPDATE), 0)
$$;
--> statement-breakpoint
CREATE OR REPLACE FUNCTION floodgate_sell_orders(p_item text, p_users text[], p_tickets text[], p_payloads text[])
RETURNS TABLE (ticket_id text, kind text, id text)
LANGUAGE plpgsql AS $$
DECLARE
  v_left bigint := floodgate_lock_stock(p_item);
BEGIN
  RETURN QUERY
  WITH req AS (
    SELECT r.u, r.t, r.p, r.ord FROM unnest(p_users, p_tickets, p_payloads) WITH ORDINALITY AS r(u, t, p, ord)
  ), prior AS (
    SELECT o.ticket_id, o.user_id, o.order_id FROM orders o
    WHERE o.item_id = p_item AND (o.ticket_id = ANY (p_tickets) OR o.user_id = ANY (p_users))
  ), classed AS (
    SELECT req.*,
      (SELECT pr.order_id FROM prior pr WHERE pr.ticket_id = req.t) AS replay_id,
      EXISTS (SELECT 1 FROM prior pr WHERE pr.user_id = req.u) AS had
    FROM req
  ), fresh AS (
    SELECT c.*, row_number() OVER (PARTITION BY c.u ORDER BY c.ord) AS nth FROM classed c WHERE c.replay_id IS NULL AND NOT c.had
  ), eligible AS (
    SELECT f.*, row_number() OVER (ORDER BY f.ord) AS k FROM fresh f WHERE f.nth = 1
  ), ins AS (
    INSERT INTO orders (item_id, user_id, ticket_id, payload)
    SELECT p_item, e.u, e.t, e.p::jsonb FROM eligible e WHERE e.k <= v_left ORDER BY e.ord
    ON CONFLICT DO NOTHING
    RETURNING orders.ticket_id, orders.order_id
  ), upd AS (
    UPDATE item_stock SET sold = sold + (SELECT count(*) FROM ins) WHERE item_stock.item_id = p_item
  )
  SELECT c.t,
    CASE WHEN c.replay_id IS NOT NULL THEN 'replay' WHEN i.order_id IS NOT NULL THEN 'sold'
      WHEN c.had OR EXISTS (SELECT 1 FROM ins i2 JOIN req r2 ON r2.t = i2.ticket_id WHERE r2.u = c.u) THEN 'limit_reached'
      ELSE 'sold_out' END,
    coalesce(c.replay_id, i.order_id)::text
  FROM classed c LEFT JOIN fresh f ON f.t = c.t LEFT JOIN ins i ON i.ticket_id = c.t
  ORDER BY c.ord;
END
$$;
--> statement-breakpoint
-- Coupons: as above, but a user may hold up to p_per_user claims (claim_no 1..per_user, which the
-- table's constraints enforce as well).
CREATE OR REPLACE FUNCTION floodgate_sell_claims(p_item text, p_users text[], p_tickets text[], p_per_user integer)
RETURNS TABLE (ticket_id text, kind text, id text)
LANGUAGE plpgsql AS $$
DECLARE
  v_left bigint := floodgate_lock_stock(p_item);
BEGIN
  RETURN QUERY
  WITH req AS (
    SELECT r.u, r.t, r.ord FROM unnest(p_users, p_tickets) WITH ORDINALITY AS r(u, t, ord)
  ), prior AS (
    SELECT c.ticket_id, c.user_id, c.claim_id, c.claim_no FROM coupon_claims c
    WHERE c.item_id = p_item AND (c.ticket_id = ANY (p_tickets) OR c.user_id = ANY (p_users))
  ), classed AS (
    SELECT req.*,
      (SELECT pr.claim_id FROM prior pr WHERE pr.ticket_id = req.t) AS replay_id,
      coalesce((SELECT max(pr.claim_no) FROM prior pr WHERE pr.user_id = req.u), 0) AS had
    FROM req
  ), fresh AS (
    SELECT c.*, c.had + row_number() OVER (PARTITION BY c.u ORDER BY c.ord) AS claim_no FROM classed c WHERE c.replay_id IS NULL
  ), eligible AS (
    SELECT f.*, row_number() OVER (ORDER BY f.ord) AS k FROM fresh f WHERE f.claim_no <= p_per_user
  ), ins AS (
    INSERT INTO coupon_claims (item_id, user_id, ticket_id, claim_no, per_user)
    SELECT p_item, e.u, e.t, e.claim_no, p_per_user FROM eligible e WHERE e.k <= v_left ORDER BY e.ord
    ON CONFLICT DO NOTHING
    RETURNING coupon_claims.ticket_id, coupon_claims.claim_id
  ), upd AS (
    UPDATE item_stock SET sold = sold + (SELECT count(*) FROM ins) WHERE item_stock.item_id = p_item
  )
  SELECT c.t,
    CASE WHEN c.replay_id IS NOT NULL THEN 'replay' WHEN i.claim_id IS NOT NULL THEN 'sold'
      WHEN c.had + (SELECT count(*) FROM ins i2 JOIN req r2 ON r2.t = i2.ticket_id WHERE r2.u = c.u) >= p_per_user THEN 'limit_reached'
      ELSE 'sold_out' END,
    coalesce(c.replay_id, i.claim_id)::text
  FROM classed c LEFT JOIN fresh f ON f.t = c.t LEFT JOIN ins i ON i.ticket_id = c.t
  ORDER BY c.ord;
END
$$;
