import type postgres from 'postgres';

/**
 * Reservations in Postgres (drizzle/0005): confirm or release one order, release the reservations
 * whose deadline passed, and track which released units are back in the Redis counter. Postgres
 * moves each order once (reserved → confirmed | released, under the item's stock lock); the unit
 * of a released order is handed back to Redis afterwards and marked returned.
 */
export type SettleOutcome = 'confirmed' | 'released' | 'expired' | 'conflict' | 'not_found';

export interface SettledOrder {
  outcome: SettleOutcome;
  /** Whether this call moved the order (false: it was already there). */
  changed: boolean;
  itemId: string | null;
  userId: string | null;
  status: 'reserved' | 'confirmed' | 'released' | null;
  /** The item's units free and reserved after the call (Postgres's word on held / sold out). */
  left: number;
  reserved: number;
}

export async function settleOrder(sql: postgres.Sql, orderId: string, to: 'confirmed' | 'released'): Promise<SettledOrder> {
  const [r] = await sql`select * from floodgate_settle_order(${orderId}::bigint, ${to})`;
  return {
    outcome: r.outcome,
    changed: r.changed,
    itemId: r.item_id,
    userId: r.user_id,
    status: r.status,
    left: Number(r.units_left ?? 0),
    reserved: Number(r.units_reserved ?? 0),
  };
}

/** Items with reservations past their deadline (the partial index on reserved_until). */
export async function itemsWithExpired(sql: postgres.Sql, limit: number): Promise<string[]> {
  const rows = await sql`
    select distinct item_id from (
      select item_id from orders where status = 'reserved' and reserved_until <= now() order by reserved_until limit ${limit * 100}
    ) due limit ${limit}`;
  return rows.map((r) => r.item_id as string);
}

/** Releases up to `limit` of an item's expired reservations; returns the ones this call released. */
export async function expireOrders(sql: postgres.Sql, itemId: string, limit: number): Promise<{ orderId: string; userId: string }[]> {
  const rows = await sql`select * from floodgate_expire_orders(${itemId}, ${limit}::int)`;
  return rows.map((r) => ({ orderId: String(r.order_id), userId: r.user_id as string }));
}

export interface ReleasedUnit {
  orderId: string;
  itemId: string;
  userId: string;
}

/**
 * Released orders whose unit is not yet marked back in Redis (a release in progress, or cut short).
 * A row another session holds locked is left to the next sweep (`skip locked`): that session is
 * working on it (an operator's hand, a test holding the moment between the two steps open).
 */
export async function unreturned(sql: postgres.Sql, limit: number): Promise<ReleasedUnit[]> {
  const rows = await sql`select order_id, item_id, user_id from orders where status = 'released' and returned_at is null order by order_id limit ${limit} for update skip locked`;
  return rows.map((r) => ({ orderId: String(r.order_id), itemId: r.item_id as string, userId: r.user_id as string }));
}

export async function markReturned(sql: postgres.Sql, orderIds: string[]): Promise<void> {
  if (orderIds.length) await sql`update orders set returned_at = now() where order_id = any(${orderIds}::bigint[]) and returned_at is null`;
}

/** The item an order belongs to, or null: asked before an order is settled, so a key scoped to other items changes nothing. */
export async function orderItem(sql: postgres.Sql, orderId: string): Promise<string | null> {
  const [r] = await sql`select item_id from orders where order_id = ${orderId}::bigint`;
  return (r?.item_id as string | undefined) ?? null;
}

/**
 * Whether the ticket's (by ref) order was released and its unit given back in Redis (returned_at):
 * a join that finds the user's entry still naming that ticket then clears it (tickets.ts). Not
 * before the return: that step clears the entry itself, and a join that cleared it first made a
 * new ticket whose entry the return then cleared — every later join a ticket more.
 */
export async function releasedAndReturned(sql: postgres.Sql, itemId: string, ref: string, userId: string): Promise<boolean> {
  const [row] = await sql`select 1 from orders where item_id = ${itemId} and ticket_id = ${ref} and user_id = ${userId} and status = 'released' and returned_at is not null`;
  return !!row;
}
