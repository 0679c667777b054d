import type postgres from 'postgres';

/**
 * Writes seckill orders and coupon claims in batches, one transaction per item per batch. The
 * item's `item_stock` row is locked first, so Postgres alone decides what was sold: a batch never
 * sells past `total`, a ticket replayed after a crash finds its earlier row, and a user never gets
 * two orders. (Raw SQL here rather than the drizzle builder: the batch is one unnest() insert.)
 */
export interface SaleRequest {
  itemId: string;
  userId: string;
  ticketId: string;
  payload?: Record<string, unknown> | null;
  /** Coupons only: the item's per-user limit. */
  perUser?: number;
}

export type SaleResult =
  | { kind: 'sold'; id: string; replay: boolean }
  | { kind: 'sold_out' }
  | { kind: 'limit_reached' };

type Table = 'orders' | 'coupon_claims';

export async function writeSales(sql: postgres.Sql, table: Table, batch: SaleRequest[]): Promise<SaleResult[]> {
  const results = new Array<SaleResult>(batch.length);
  const byItem = new Map<string, number[]>();
  batch.forEach((r, i) => byItem.set(r.itemId, [...(byItem.get(r.itemId) ?? []), i]));
  for (const [itemId, idx] of byItem) {
    const reqs = idx.map((i) => batch[i]);
    const out = await sql.begin((tx) => writeItemBatch(tx, table, itemId, reqs));
    idx.forEach((i, j) => (results[i] = out[j]));
  }
  return results;
}

async function writeItemBatch(tx: postgres.TransactionSql, table: Table, itemId: string, reqs: SaleRequest[]): Promise<SaleResult[]> {
  const [stock] = await tx`select total, sold from item_stock where item_id = ${itemId} for update`;
  let left = stock ? Number(stock.total) - Number(stock.sold) : 0;
  const ticketIds = reqs.map((r) => r.ticketId);
  const userIds = [...new Set(reqs.map((r) => r.userId))];
  const idCol = table === 'orders' ? 'order_id' : 'claim_id';
  const existing = await tx`
    select ${tx(idCol)}::text as id, ticket_id, user_id ${table === 'coupon_claims' ? tx`, claim_no` : tx``}
    from ${tx(table)} where item_id = ${itemId} and (ticket_id = any(${ticketIds}) or user_id = any(${userIds}))`;
  const byTicket = new Map(existing.map((r) => [r.ticket_id as string, r.id as string]));
  const claimsOf = new Map<string, number>();
  for (const r of existing) claimsOf.set(r.user_id, Math.max(claimsOf.get(r.user_id) ?? 0, table === 'orders' ? 1 : Number(r.claim_no)));

  const results: SaleResult[] = [];
  const insert: { i: number; r: SaleRequest; claimNo: number }[] = [];
  reqs.forEach((r, i) => {
    const earlier = byTicket.get(r.ticketId);
    if (earlier) return void (results[i] = { kind: 'sold', id: earlier, replay: true });
    const had = claimsOf.get(r.userId) ?? 0;
    const limit = table === 'orders' ? 1 : (r.perUser ?? 1);
    if (had >= limit) return void (results[i] = { kind: 'limit_reached' });
    if (left <= 0) return void (results[i] = { kind: 'sold_out' });
    left--;
    claimsOf.set(r.userId, had + 1);
    insert.push({ i, r, claimNo: had + 1 });
  });
  if (!insert.length) return results;

  const rows =
    table === 'orders'
      ? await tx`
        insert into orders (item_id, user_id, ticket_id, payload)
        select ${itemId}, u, t, p::jsonb from unnest(${insert.map((x) => x.r.userId)}::text[], ${insert.map((x) => x.r.ticketId)}::text[], ${insert.map((x) => (x.r.payload ? JSON.stringify(x.r.payload) : null))}::text[]) as v(u, t, p)
        returning order_id::text as id, ticket_id`
      : await tx`
        insert into coupon_claims (item_id, user_id, ticket_id, claim_no, per_user)
        select ${itemId}, u, t, n, ${insert[0].r.perUser ?? 1} from unnest(${insert.map((x) => x.r.userId)}::text[], ${insert.map((x) => x.r.ticketId)}::text[], ${insert.map((x) => x.claimNo)}::int[]) as v(u, t, n)
        returning claim_id::text as id, ticket_id`;
  const ids = new Map(rows.map((r) => [r.ticket_id as string, r.id as string]));
  await tx`update item_stock set sold = sold + ${insert.length} where item_id = ${itemId}`;
  for (const x of insert) results[x.i] = { kind: 'sold', id: ids.get(x.r.ticketId)!, replay: false };
  return results;
}

/** Creates or updates an item's stock row; `total` is the handler's stock or coupon total. */
export async function defineStock(sql: postgres.Sql, itemId: string, total: number): Promise<void> {
  await sql`
    insert into item_stock (item_id, total, sold) values (${itemId}, ${total}, 0)
    on conflict (item_id) do update set total = greatest(excluded.total, item_stock.sold)`;
}

/** Recounts `sold` from the rows themselves and returns the units left: the basis of reconcile. */
export async function recountStock(sql: postgres.Sql, table: Table, itemId: string): Promise<{ total: number; sold: number } | null> {
  const [row] = await sql`
    update item_stock set sold = (select count(*) from ${sql(table)} where item_id = ${itemId})
    where item_id = ${itemId} returning total, sold`;
  return row ? { total: Number(row.total), sold: Number(row.sold) } : null;
}
