-- Ticket ids are bearer capabilities (whoever holds one can read and cancel the ticket), so
-- Postgres keeps only each ticket's ref, base64url(SHA-256(ticket id)), which names the ticket
-- without granting anything. Rows written before this migration hold raw ids (they contain dots;
-- refs never do) and are converted in place.
UPDATE orders SET ticket_id = rtrim(translate(encode(sha256(convert_to(ticket_id, 'UTF8')), 'base64'), '+/', '-_'), '=') WHERE ticket_id LIKE '%.%.%';
--> statement-breakpoint
UPDATE coupon_claims SET ticket_id = rtrim(translate(encode(sha256(convert_to(ticket_id, 'UTF8')), 'base64'), '+/', '-_'), '=') WHERE ticket_id LIKE '%.%.%';
--> statement-breakpoint
UPDATE ticket_outcomes SET ticket_id = rtrim(translate(encode(sha256(convert_to(ticket_id, 'UTF8')), 'base64'), '+/', '-_'), '=') WHERE ticket_id LIKE '%.%.%';
--> statement-breakpoint
-- An ended item whose Redis keys were removed after the retention period keeps its row, marked
-- archived, so a daemon start does not re-create it in Redis.
ALTER TABLE items ADD COLUMN IF NOT EXISTS archived_at timestamp with time zone;
--> statement-breakpoint
-- The sell functions, as in 0002, with two changes:
-- * a ticket whose row exists is a replay only when the row is the same user's: a row of another
--   user under the same ticket ref ('foreign') is never handed over as this user's order (a ticket
--   id issued twice, which the binding half of the id's MAC exists to prevent, would otherwise give
--   one user another's order);
-- * every row says how many units Postgres has left after the batch (`units_left`), so "sold out"
--   is decided by Postgres under the stock lock, never by a Redis counter alone.
DROP FUNCTION IF EXISTS floodgate_sell_orders(text, text[], text[], text[]);
--> statement-breakpoint
DROP FUNCTION IF EXISTS floodgate_sell_claims(text, text[], text[], integer);
--> statement-breakpoint
CREATE FUNCTION floodgate_sell_orders(p_item text, p_users text[], p_tickets text[], p_payloads text[])
RETURNS TABLE (ticket_id text, kind text, id text, units_left bigint)
LANGUAGE plpgsql AS $$
DECLARE
  v_left bigint := floodgate_lock_stock(p_item);
BEGIN
  RETURN QUERY
  WITH req AS (
    SELECT r.u, r.t, r.p, r.ord FROM unnest(p_users, p_tickets, p_payloads) WITH ORDINALITY AS r(u, t, p, ord)
  ), prior AS (
    -- One unique-index probe per ticket and per user (see 0002 for why LATERAL … LIMIT 1).
    SELECT o.ticket_id, o.user_id, o.order_id FROM unnest(p_tickets) q(t)
      CROSS JOIN LATERAL (SELECT * FROM orders x WHERE x.ticket_id = q.t AND x.item_id = p_item LIMIT 1) o
    UNION
    SELECT o.ticket_id, o.user_id, o.order_id FROM unnest(p_users) q(u)
      CROSS JOIN LATERAL (SELECT * FROM orders x WHERE x.item_id = p_item AND x.user_id = q.u LIMIT 1) o
  ), classed AS (
    SELECT req.*, pt.order_id AS prior_id, pt.user_id AS prior_user, pu.user_id IS NOT NULL AS had
    FROM req
    LEFT JOIN prior pt ON pt.ticket_id = req.t
    LEFT JOIN (SELECT DISTINCT pr.user_id FROM prior pr) pu ON pu.user_id = req.u
  ), fresh AS (
    SELECT c.*, row_number() OVER (PARTITION BY c.u ORDER BY c.ord) AS nth FROM classed c WHERE c.prior_id IS NULL AND NOT c.had
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
    CASE WHEN c.prior_id IS NOT NULL AND c.prior_user = c.u THEN 'replay'
      WHEN c.prior_id IS NOT NULL THEN 'foreign'
      WHEN i.order_id IS NOT NULL THEN 'sold'
      WHEN c.had OR b.u IS NOT NULL THEN 'limit_reached' ELSE 'sold_out' END,
    (CASE WHEN c.prior_id IS NOT NULL AND c.prior_user = c.u THEN c.prior_id ELSE i.order_id END)::text,
    greatest(v_left - (SELECT count(*) FROM ins), 0)::bigint
  FROM classed c LEFT JOIN ins i ON i.ticket_id = c.t LEFT JOIN buyers b ON b.u = c.u
  ORDER BY c.ord;
END
$$;
--> statement-breakpoint
CREATE FUNCTION floodgate_sell_claims(p_item text, p_users text[], p_tickets text[], p_per_user integer)
RETURNS TABLE (ticket_id text, kind text, id text, units_left bigint)
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
    SELECT req.*, pt.claim_id AS prior_id, pt.user_id AS prior_user, coalesce(pu.had, 0) AS had
    FROM req
    LEFT JOIN prior pt ON pt.ticket_id = req.t
    LEFT JOIN (SELECT pr.user_id, max(pr.claim_no) AS had FROM prior pr GROUP BY pr.user_id) pu ON pu.user_id = req.u
  ), fresh AS (
    SELECT c.*, c.had + row_number() OVER (PARTITION BY c.u ORDER BY c.ord) AS claim_no FROM classed c WHERE c.prior_id IS NULL
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
    CASE WHEN c.prior_id IS NOT NULL AND c.prior_user = c.u THEN 'replay'
      WHEN c.prior_id IS NOT NULL THEN 'foreign'
      WHEN i.claim_id IS NOT NULL THEN 'sold'
      WHEN c.had + coalesce(n.n, 0) >= p_per_user THEN 'limit_reached' ELSE 'sold_out' END,
    (CASE WHEN c.prior_id IS NOT NULL AND c.prior_user = c.u THEN c.prior_id ELSE i.claim_id END)::text,
    greatest(v_left - (SELECT count(*) FROM ins), 0)::bigint
  FROM classed c LEFT JOIN ins i ON i.ticket_id = c.t LEFT JOIN claimed n ON n.u = c.u
  ORDER BY c.ord;
END
$$;
