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
    -- One unique-index probe per ticket and per user, whatever the statistics say (LIMIT keeps the
    -- planner from flattening the LATERAL into a join that reads all the item's orders: O(orders
    -- sold) per batch, which it picks on a young table whose item_id it believes selective).
    SELECT o.ticket_id, o.user_id, o.order_id FROM unnest(p_tickets) q(t)
      CROSS JOIN LATERAL (SELECT * FROM orders x WHERE x.ticket_id = q.t AND x.item_id = p_item LIMIT 1) o
    UNION
    SELECT o.ticket_id, o.user_id, o.order_id FROM unnest(p_users) q(u)
      CROSS JOIN LATERAL (SELECT * FROM orders x WHERE x.item_id = p_item AND x.user_id = q.u LIMIT 1) o
  ), classed AS (
    SELECT req.*, pt.order_id AS replay_id, pu.user_id IS NOT NULL AS had
    FROM req
    LEFT JOIN prior pt ON pt.ticket_id = req.t
    LEFT JOIN (SELECT DISTINCT pr.user_id FROM prior pr) pu ON pu.user_id = req.u
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
  ), buyers AS (
    SELECT DISTINCT r.u FROM ins i JOIN req r ON r.t = i.ticket_id
  )
  SELECT c.t,
    CASE WHEN c.replay_id IS NOT NULL THEN 'replay' WHEN i.order_id IS NOT NULL THEN 'sold'
      WHEN c.had OR b.u IS NOT NULL THEN 'limit_reached' ELSE 'sold_out' END,
    coalesce(c.replay_id, i.order_id)::text
  FROM classed c LEFT JOIN ins i ON i.ticket_id = c.t LEFT JOIN buyers b ON b.u = c.u
  ORDER BY c.ord;
END
$$;
--> statement-breakpoint
-- Coupons: as above, but a user may hold up to p_per_user claims (claim_no 1..per_user, which the
-- table's constraints enforce as well); the user probe reads the user's highest claim.
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
    SELECT c.ticket_id, c.user_id, c.claim_id, c.claim_no FROM unnest(p_tickets) q(t)
      CROSS JOIN LATERAL (SELECT * FROM coupon_claims x WHERE x.ticket_id = q.t AND x.item_id = p_item LIMIT 1) c
    UNION
    SELECT c.ticket_id, c.user_id, c.claim_id, c.claim_no FROM unnest(p_users) q(u)
      CROSS JOIN LATERAL (SELECT * FROM coupon_claims x WHERE x.item_id = p_item AND x.user_id = q.u ORDER BY x.claim_no DESC LIMIT 1) c
  ), classed AS (
    SELECT req.*, pt.claim_id AS replay_id, coalesce(pu.had, 0) AS had
    FROM req
    LEFT JOIN prior pt ON pt.ticket_id = req.t
    LEFT JOIN (SELECT pr.user_id, max(pr.claim_no) AS had FROM prior pr GROUP BY pr.user_id) pu ON pu.user_id = req.u
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
  ), claimed AS (
    SELECT r.u, count(*) AS n FROM ins i JOIN req r ON r.t = i.ticket_id GROUP BY r.u
  )
  SELECT c.t,
    CASE WHEN c.replay_id IS NOT NULL THEN 'replay' WHEN i.claim_id IS NOT NULL THEN 'sold'
      WHEN c.had + coalesce(n.n, 0) >= p_per_user THEN 'limit_reached' ELSE 'sold_out' END,
    coalesce(c.replay_id, i.claim_id)::text
  FROM classed c LEFT JOIN ins i ON i.ticket_id = c.t LEFT JOIN claimed n ON n.u = c.u
  ORDER BY c.ord;
END
$$;
