import type { Sql } from 'postgres';
import { expect } from 'vitest';
import { waitFor } from './daemon-inproc.js';

type View = { state: string; userId: string; outcome?: { reason?: string } };

/**
 * A seckill sale's end as its buyers and Postgres see it: every ticket (read through `read`) ends
 * succeeded or rejected `sold_out`, exactly `stock` won by distinct users, as many orders, one per
 * user, and the stock row sold out.
 */
export async function expectSoldExactly(sql: Sql, itemId: string, stock: number, ids: string[], read: (id: string, i: number) => Promise<View>) {
  const views = await waitFor(
    () => Promise.all(ids.map(read)),
    (vs) => vs.every((v) => v.state === 'succeeded' || v.state === 'rejected'),
    60_000,
  );
  const won = views.filter((v) => v.state === 'succeeded');
  expect(won.length).toBe(stock);
  expect(new Set(won.map((v) => v.userId)).size).toBe(stock);
  for (const v of views.filter((x) => x.state === 'rejected')) expect(v.outcome?.reason).toBe('sold_out');
  const orders = await sql`select user_id from orders where item_id = ${itemId}`;
  expect(orders.length).toBe(stock);
  expect(new Set(orders.map((o) => o.user_id)).size).toBe(stock);
  const [row] = await sql`select total, sold from item_stock where item_id = ${itemId}`;
  expect(row).toMatchObject({ total: stock, sold: stock });
}
