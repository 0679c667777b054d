-- A voided ticket (0010) no longer takes a place among a batch's buyers. 0011 and 0012 numbered
-- it with the others (k, and a coupon user's claim_no) and the insert trigger then skipped its
-- row: with one unit left, a batch [voided, bob] tried the voided ticket at k = 1 and classed bob
-- (k = 2) sold_out while the unit was still there — a false "sold out" (and, for coupons, a user's
-- voided ticket counted against their per-user limit: a false limit_reached). Voided tickets are
-- now left out before the numbering; they are still answered 'void'. A plain anti-join suffices:
-- the statement's snapshot is taken after the stock locks (the PERFORM before it), so it sees every
-- void committed before them, as floodgate_voided does (0010, 0011).
CREATE OR REPLACE FUNCTION floodgate_sell_orders_many(p_items text[], p_users text[], p_tickets text[], p_payloads text[], p_reserve_ms bigint)
RETURNS TABLE (item_id text, ticket_id text, kind text, id text, units_left bigint, units_reserved bigint, reserved_until timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
  v_until timestamptz := CASE WHEN p_reserve_ms IS NULL THEN NULL ELSE now() + p_reserve_ms * interval '1 millisecond' END;
BEGIN
  PERFORM 1 FROM item_stock s WHERE s.item_id = ANY (p_items) ORDER BY s.item_id FOR UPDATE;
  RETURN QUERY
  WITH req AS (
    SELECT r.it, r.u, r.t, r.p, r.ord FROM unnest(p_items, p_users, p_tickets, p_payloads) WITH ORDINALITY AS r(it, u, t, p, ord)
  ), stock AS (
    SELECT s.item_id AS it, (s.total - s.sold)::bigint AS lft, s.reserved::bigint AS res FROM item_stock s WHERE s.item_id = ANY (p_items)
  ), prior AS (
    -- One unique-index probe per ticket and per user (see 0002 for why LATERAL … LIMIT 1).
    SELECT o.item_id AS it, o.ticket_id, o.user_id, o.order_id, o.reserved_until FROM req q
      CROSS JOIN LATERAL (SELECT * FROM orders x WHERE x.ticket_id = q.t AND x.item_id = q.it LIMIT 1) o
    UNION
    SELECT o.item_id AS it, o.ticket_id, o.user_id, o.order_id, o.reserved_until FROM req q
      CROSS JOIN LATERAL (SELECT * FROM orders x WHERE x.item_id = q.it AND x.user_id = q.u AND x.status <> 'released' LIMIT 1) o
  ), classed AS (
    SELECT req.*, pt.order_id AS prior_id, pt.user_id AS prior_user, pt.reserved_until AS prior_until, pu.user_id IS NOT NULL AS had
    FROM req
    LEFT JOIN prior pt ON pt.it = req.it AND pt.ticket_id = req.t
    LEFT JOIN (SELECT DISTINCT pr.it, pr.user_id FROM prior pr) pu ON pu.it = req.it AND pu.user_id = req.u
  ), fresh AS (
    SELECT c.*, row_number() OVER (PARTITION BY c.it, c.u ORDER BY c.ord) AS nth FROM classed c
      WHERE c.prior_id IS NULL AND NOT c.had AND NOT EXISTS (SELECT 1 FROM voided_tickets v WHERE v.ticket_id = c.t)
  ), eligible AS (
    SELECT f.*, row_number() OVER (PARTITION BY f.it ORDER BY f.ord) AS k FROM fresh f WHERE f.nth = 1
  ), ins AS (
    INSERT INTO orders (item_id, user_id, ticket_id, payload, status, reserved_until)
    SELECT e.it, e.u, e.t, e.p::jsonb, CASE WHEN v_until IS NULL THEN 'confirmed' ELSE 'reserved' END, v_until
    FROM eligible e JOIN stock s ON s.it = e.it WHERE e.k <= s.lft ORDER BY e.it, e.ord
    ON CONFLICT DO NOTHING
    RETURNING orders.item_id AS it, orders.ticket_id, orders.order_id
  ), sold AS (
    SELECT i.it, count(*)::bigint AS n FROM ins i GROUP BY i.it
  ), upd AS (
    UPDATE item_stock SET sold = item_stock.sold + sold.n,
      reserved = item_stock.reserved + CASE WHEN v_until IS NULL THEN 0 ELSE sold.n END
    FROM sold WHERE item_stock.item_id = sold.it
  ), buyers AS (
    SELECT DISTINCT r.it, r.u FROM ins i JOIN req r ON r.it = i.it AND r.t = i.ticket_id
  )
  SELECT c.it, c.t,
    CASE WHEN c.prior_id IS NOT NULL AND c.prior_user = c.u THEN 'replay'
      WHEN c.prior_id IS NOT NULL THEN 'foreign'
      WHEN i.order_id IS NOT NULL THEN 'sold'
      WHEN floodgate_voided(c.t) THEN 'void'
      WHEN c.had OR b.u IS NOT NULL THEN 'limit_reached' ELSE 'sold_out' END,
    (CASE WHEN c.prior_id IS NOT NULL AND c.prior_user = c.u THEN c.prior_id ELSE i.order_id END)::text,
    greatest(coalesce(s.lft, 0) - coalesce(sd.n, 0), 0)::bigint,
    (coalesce(s.res, 0) + CASE WHEN v_until IS NULL THEN 0 ELSE coalesce(sd.n, 0) END)::bigint,
    CASE WHEN c.prior_id IS NOT NULL AND c.prior_user = c.u THEN c.prior_until WHEN i.order_id IS NOT NULL THEN v_until END
  FROM classed c
  LEFT JOIN ins i ON i.it = c.it AND i.ticket_id = c.t
  LEFT JOIN buyers b ON b.it = c.it AND b.u = c.u
  LEFT JOIN stock s ON s.it = c.it
  LEFT JOIN sold sd ON sd.it = c.it
  ORDER BY c.it, c.ord;
END
$$;
--> statement-breakpoint
-- CREATE OR REPLACE resets a function's settings: the generic plan of 0009 again.
ALTER FUNCTION floodgate_sell_orders_many(text[], text[], text[], text[], bigint) SET plan_cache_mode = force_generic_plan;
--> statement-breakpoint
CREATE OR REPLACE FUNCTION floodgate_sell_claims_many(p_items text[], p_users text[], p_tickets text[], p_per_user integer)
RETURNS TABLE (item_id text, ticket_id text, kind text, id text, units_left bigint)
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM 1 FROM item_stock s WHERE s.item_id = ANY (p_items) ORDER BY s.item_id FOR UPDATE;
  RETURN QUERY
  WITH req AS (
    SELECT r.it, r.u, r.t, r.ord FROM unnest(p_items, p_users, p_tickets) WITH ORDINALITY AS r(it, u, t, ord)
  ), stock AS (
    SELECT s.item_id AS it, (s.total - s.sold)::bigint AS lft FROM item_stock s WHERE s.item_id = ANY (p_items)
  ), prior AS (
    SELECT c.item_id AS it, c.ticket_id, c.user_id, c.claim_id, c.claim_no FROM req q
      CROSS JOIN LATERAL (SELECT * FROM coupon_claims x WHERE x.ticket_id = q.t AND x.item_id = q.it LIMIT 1) c
    UNION
    SELECT c.item_id AS it, c.ticket_id, c.user_id, c.claim_id, c.claim_no FROM req q
      CROSS JOIN LATERAL (SELECT * FROM coupon_claims x WHERE x.item_id = q.it AND x.user_id = q.u ORDER BY x.claim_no DESC LIMIT 1) c
  ), classed AS (
    SELECT req.*, pt.claim_id AS prior_id, pt.user_id AS prior_user, coalesce(pu.had, 0) AS had
    FROM req
    LEFT JOIN prior pt ON pt.it = req.it AND pt.ticket_id = req.t
    LEFT JOIN (SELECT pr.it, pr.user_id, max(pr.claim_no) AS had FROM prior pr GROUP BY pr.it, pr.user_id) pu ON pu.it = req.it AND pu.user_id = req.u
  ), fresh AS (
    SELECT c.*, c.had + row_number() OVER (PARTITION BY c.it, c.u ORDER BY c.ord) AS claim_no FROM classed c
      WHERE c.prior_id IS NULL AND NOT EXISTS (SELECT 1 FROM voided_tickets v WHERE v.ticket_id = c.t)
  ), eligible AS (
    SELECT f.*, row_number() OVER (PARTITION BY f.it ORDER BY f.ord) AS k FROM fresh f WHERE f.claim_no <= p_per_user
  ), ins AS (
    INSERT INTO coupon_claims (item_id, user_id, ticket_id, claim_no, per_user)
    SELECT e.it, e.u, e.t, e.claim_no, p_per_user FROM eligible e JOIN stock s ON s.it = e.it WHERE e.k <= s.lft ORDER BY e.it, e.ord
    ON CONFLICT DO NOTHING
    RETURNING coupon_claims.item_id AS it, coupon_claims.ticket_id, coupon_claims.claim_id
  ), sold AS (
    SELECT i.it, count(*)::bigint AS n FROM ins i GROUP BY i.it
  ), upd AS (
    UPDATE item_stock SET sold = item_stock.sold + sold.n FROM sold WHERE item_stock.item_id = sold.it
  ), claimed AS (
    SELECT r.it, r.u, count(*) AS n FROM ins i JOIN req r ON r.it = i.it AND r.t = i.ticket_id GROUP BY r.it, r.u
  )
  SELECT c.it, c.t,
    CASE WHEN c.prior_id IS NOT NULL AND c.prior_user = c.u THEN 'replay'
      WHEN c.prior_id IS NOT NULL THEN 'foreign'
      WHEN i.claim_id IS NOT NULL THEN 'sold'
      WHEN floodgate_voided(c.t) THEN 'void'
      WHEN c.had + coalesce(n.n, 0) >= p_per_user THEN 'limit_reached' ELSE 'sold_out' END,
    (CASE WHEN c.prior_id IS NOT NULL AND c.prior_user = c.u THEN c.prior_id ELSE i.claim_id END)::text,
    greatest(coalesce(s.lft, 0) - coalesce(sd.n, 0), 0)::bigint
  FROM classed c
  LEFT JOIN ins i ON i.it = c.it AND i.ticket_id = c.t
  LEFT JOIN claimed n ON n.it = c.it AND n.u = c.u
  LEFT JOIN stock s ON s.it = c.it
  LEFT JOIN sold sd ON sd.it = c.it
  ORDER BY c.it, c.ord;
END
$$;
--> statement-breakpoint
-- CREATE OR REPLACE resets a function's settings: the generic plan of 0009 again.
ALTER FUNCTION floodgate_sell_claims_many(text[], text[], text[], integer) SET plan_cache_mode = force_generic_plan;
