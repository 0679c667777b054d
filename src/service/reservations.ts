import type postgres from 'postgres';
import { expireOrders, itemsWithExpired, markReturned, orderItem, settleOrder, unreturned, type ReleasedUnit, type SettledOrder } from '../db/orders.js';
import { fail } from '../kernel/errors.js';
import type { Logger } from '../kernel/logger.js';
import type { Line } from '../queue/line.js';
import type { StockCounters } from './stock-counters.js';

/**
 * Reservations (seckill with `config.reserveMs`): the order a sale made is confirmed or released
 * by the shop, or released by whichever daemon sees its deadline pass first.
 *
 * A release is two steps: Postgres moves the order to `released` (exactly once: the status moves
 * under the item's stock lock) and gives the unit back to its count; then the unit goes back to
 * the Redis counter and the buyer's `users` entry is cleared (once per order: the Redis script
 * keeps the ids it has returned), and the order is marked `returned_at`. A daemon killed between
 * the two leaves `returned_at` null, and the next sweep of any daemon finishes it.
 *
 * When a confirm leaves no unit free and none reserved, every unit is paid for: the line is cut
 * `sold_out` (until then the item is `held` and its waiting tickets keep their place).
 */
export interface Reservations {
  /**
   * `mayUse`: throws unless the caller may use the order's item (a service key scoped to other
   * items released another shop's reservations, and their units went back on sale).
   */
  confirm(orderId: string, mayUse?: (itemId: string) => void): Promise<{ orderId: string; status: 'confirmed' }>;
  release(orderId: string, mayUse?: (itemId: string) => void): Promise<{ orderId: string; status: 'released' }>;
  /** One sweep: releases reservations past their deadline and returns released units to Redis. */
  sweep(): Promise<{ expired: number; returned: number }>;
}

export interface ReservationDeps {
  sql: postgres.Sql;
  queue: Pick<Line, 'definitions'>;
  /** Where a released unit goes back (Redis's counter). */
  stock: Pick<StockCounters, 'returnReleased'>;
  log: Logger;
  /** A released unit is back in an item's counter: wake the dispatcher for it. */
  onReturned(itemId: string): void;
  /** The daemon's clock (ms): when a confirm's Postgres call began, for its sold-out cut (definitions.cut's `decidedAt`). */
  now?(): number;
}

export function createReservations(deps: ReservationDeps): Reservations {
  const { sql, queue, log } = deps;

  /** One Redis call per item, then one Postgres update: a sweep may carry a thousand releases. */
  async function giveBack(units: ReleasedUnit[]): Promise<number> {
    const byItem = new Map<string, ReleasedUnit[]>();
    for (const u of units) byItem.set(u.itemId, [...(byItem.get(u.itemId) ?? []), u]);
    let n = 0;
    for (const [itemId, us] of byItem) {
      // Never past what Postgres has left now that they are released: a release under a stock
      // lowered below what was sold frees no unit there (drizzle/0013), and must not here (a
      // review's model run: the item read open, remaining 1, admitted a ticket and told it
      // sold_out). Read and given back under the item's stock row lock, which every release, sale
      // and restock takes to commit: a bound read before another release committed, used after
      // that release's own give-back, dropped a unit Postgres had (a review: two releases, the
      // counter left at 1 of 2 until the stock keeper's next count once the item had no ticket out).
      n += await sql.begin(async (tx) => {
        const [row] = await tx`select total - sold as left from item_stock where item_id = ${itemId} for update`;
        return deps.stock.returnReleased(itemId, us, row ? Number(row.left) : undefined);
      });
      deps.onReturned(itemId);
    }
    await markReturned(sql, units.map((u) => u.orderId));
    return n;
  }

  /**
   * Every unit confirmed: the waiting tickets end rejected / sold_out — unless the item was
   * restocked after the confirm's Postgres call began (`decidedAt`): its count is old then.
   */
  async function cutIfSoldOut(o: SettledOrder, decidedAt: number) {
    if (o.itemId && o.left <= 0 && o.reserved === 0) await queue.definitions.cut(o.itemId, 'sold_out', undefined, decidedAt);
  }
  const now = deps.now ?? Date.now;

  /** The scope check, before anything changes (an order of no item is the settle's not_found). */
  async function checkItem(orderId: string, mayUse?: (itemId: string) => void) {
    if (!mayUse) return;
    const itemId = await orderItem(sql, orderId);
    if (itemId !== null) mayUse(itemId);
  }

  const released = (orderId: string, o: SettledOrder) => giveBack([{ orderId, itemId: o.itemId!, userId: o.userId! }]);

  return {
    async confirm(orderId, mayUse) {
      await checkItem(orderId, mayUse);
      const decidedAt = now();
      const o = await settleOrder(sql, orderId, 'confirmed');
      if (o.outcome === 'not_found') fail('not_found', 'No such order.');
      if (o.outcome === 'expired') {
        if (o.changed) await released(orderId, o);
        fail('reservation_expired', 'The reservation ran out before it was confirmed; its unit went back on sale.');
      }
      if (o.outcome === 'conflict') fail('conflict', 'The order was released; it cannot be confirmed.');
      await cutIfSoldOut(o, decidedAt);
      return { orderId, status: 'confirmed' };
    },

    async release(orderId, mayUse) {
      await checkItem(orderId, mayUse);
      const o = await settleOrder(sql, orderId, 'released');
      if (o.outcome === 'not_found') fail('not_found', 'No such order.');
      if (o.outcome === 'conflict') fail('conflict', 'The order is confirmed; it cannot be released.');
      if (o.changed) await released(orderId, o);
      return { orderId, status: 'released' };
    },

    async sweep() {
      let expired = 0;
      for (const itemId of await itemsWithExpired(sql, 50)) {
        const gone = await expireOrders(sql, itemId, 1000);
        expired += gone.length;
        if (gone.length) log.info({ itemId, released: gone.length }, 'expired reservations released');
      }
      // The units of those, and of any release whose daemon died before it gave its unit back.
      const returned = await giveBack(await unreturned(sql, 1000));
      return { expired, returned };
    },
  };
}
