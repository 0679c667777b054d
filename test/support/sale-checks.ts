import type { Sql } from 'postgres';
import { expect } from 'vitest';
import { waitFor } from './daemon-inproc.js';

type View = { state: string; userId: string; outcome?: { reason?: string; result?: { orderId?: string } } };

/**
 * A seckill sale's end as its buyers and Postgres see it: every ticket (read through `read`) ends
 * succeeded or rejected `sold_out`, exactly `stock` won by distinct users, as many orders, one per
 * user, each winner's order its own, and the stock row sold out. Returns the tickets' views.
 */
export async function expectSoldExactly(sql: Sql, itemId: string, stock: number, ids: string[], read: (id: string, i: number) => Promise<View>) {
  const ended = (v: View | undefined) => v?.state === 'succeeded' || v?.state === 'rejected';
  // Each round reads only the tickets not ended yet (an ended ticket stays as it ended), not every
  // ticket of the sale again each 100 ms.
  const seen: (View | undefined)[] = ids.map(() => undefined);
  const views = await waitFor(
    async () => {
      await Promise.all(
        ids.map(async (id, i) => {
          if (!ended(seen[i])) seen[i] = await read(id, i);
        }),
      );
      return seen as View[];
    },
    (vs) => vs.every(ended),
    60_000,
  );
  const won = views.filter((v) => v.state === 'succeeded');
  expect(won.length).toBe(stock);
  expect(new Set(won.map((v) => v.userId)).size).toBe(stock);
  for (const v of views.filter((x) => x.state === 'rejected')) expect(v.outcome?.reason).toBe('sold_out');
  const orders = await sql`select order_id::text as id, user_id from orders where item_id = ${itemId}`;
  expect(orders.length).toBe(stock);
  expect(new Set(orders.map((o) => o.user_id)).size).toBe(stock);
  const owner = new Map(orders.map((o) => [o.id, o.user_id]));
  for (const v of won) expect(owner.get(v.outcome?.result?.orderId ?? '')).toBe(v.userId);
  const [row] = await sql`select total, sold from item_stock where item_id = ${itemId}`;
  expect(row).toMatchObject({ total: stock, sold: stock });
  return views;
}
