import type { PgHealth } from '../db/health.js';
import type { Logger } from '../kernel/logger.js';
import { every } from '../kernel/loop.js';
import type { Line } from '../queue/line.js';
import type { Catalog } from './catalog.js';

/**
 * Keeps each item's Redis stock counter equal to what Postgres says is left (total − sold) once
 * the item is quiet, so "Redis stock + Postgres sold = total" holds whatever Redis lost or rolled
 * back. Every round it looks at the active items (a counter moves only with work on its item,
 * which makes it active; a start or a Redis reconnect makes every item active) through their
 * cached views, no Redis call, and reconciles, while no ticket is admitted:
 *
 * - an item whose counter is empty while tickets wait and it is not sold out: units stranded (a
 *   crash between a take and its sale, a rolled-back counter) would otherwise pause it for good;
 * - an item that sold, refunded or admitted anything since its last reconcile, once its view has
 *   not moved for a round (or, on an item that never rests, every BUSY_EVERY_MS): a counter
 *   rolled back to an older, higher value is brought down (Postgres would refuse the extra sales
 *   anyway, but the item view's `remaining` must be true). A reconcile is about seven Postgres
 *   statements (one of them a count under the item's stock lock, which sales wait for) and three
 *   Redis calls; tried on every item whose view had moved, a sale over 200 items asked for up to
 *   a hundred a second, nearly all refused by the sales in flight.
 *
 * The reconcile itself is safe during a sale: the counter is set only if no ticket is admitted at
 * that moment (checked inside the set-stock script).
 */
export function startStockKeeper(deps: StockKeeperDeps, opts: { everyMs: number }) {
  return every(opts.everyMs, 'stock keeper', stockKeeperRound(deps), deps.log);
}

/** An item whose view keeps moving is reconciled at most this often (ms). */
export const BUSY_EVERY_MS = 30_000;

export interface StockKeeperDeps {
  queue: Pick<Line, 'items'>;
  catalog: Pick<Catalog, 'reconcile'>;
  pg: Pick<PgHealth, 'up'>;
  log: Logger;
  /** Milliseconds, for BUSY_EVERY_MS (default performance.now). */
  now?: () => number;
  /**
   * Postgres's units left (total − sold) of these items, in one read (db/stock-rows.ts `left`):
   * an item due a reconcile whose counter already holds that is only marked seen. Without it,
   * every item due is reconciled.
   */
  left?(itemIds: string[]): Promise<Map<string, number>>;
}

/** One round of the stock keeper (startStockKeeper runs it every `everyMs`). */
export function stockKeeperRound(deps: StockKeeperDeps) {
  const now = deps.now ?? (() => performance.now());
  /** Per item: its view's mark after the last reconcile that set the counter. */
  const seen = new Map<string, string>();
  /** Per item: its view's mark in the previous round. */
  const last = new Map<string, string>();
  /** Per item moving since: when a round first saw it moving after its last reconcile. */
  const busyAt = new Map<string, number>();
  return async function round() {
    if (!deps.pg.up) return;
    const ids = await deps.queue.items.activeItemIds();
    if (last.size > 2 * ids.length + 1000) {
      const active = new Set(ids);
      for (const m of [last, busyAt, seen]) for (const id of m.keys()) if (!active.has(id)) m.delete(id);
    }
    const due: { itemId: string; mark: string; stranded: boolean; units: number }[] = [];
    for (const itemId of ids) {
      const s = deps.queue.items.peek(itemId)?.snap;
      if (!s || s.stockLeft === null || s.counts.admitted > 0) continue;
      const mark = `${s.incarnation}|${s.seq}|${s.admissions}|${s.counts.succeeded}|${s.counts.rejected}|${s.counts.failed}|${s.stockLeft}`;
      // Sold out with units in the counter (a cut after a restock, a reserved unit released after a
      // cut): only a reconcile clears the flag, whatever Postgres's count says of the counter.
      const stranded = (s.stockLeft === 0 && !s.soldOut && !s.closed && s.counts.waiting > 0) || (s.soldOut && !s.closed && s.stockLeft > 0);
      const rested = last.get(itemId) === mark;
      last.set(itemId, mark);
      if (!stranded && seen.get(itemId) === mark) continue;
      if (!stranded && !rested) {
        // Still moving: not before it rests, unless it has not rested for BUSY_EVERY_MS.
        const since = busyAt.get(itemId);
        if (since === undefined) busyAt.set(itemId, now());
        if (since === undefined || now() - since < BUSY_EVERY_MS) continue;
      }
      busyAt.delete(itemId);
      due.push({ itemId, mark, stranded, units: s.stockLeft });
    }
    // A start or a reconnect makes every item due once (none seen yet): 5,000 seckill items were
    // 5,000 reconciles one after another, ~500 Postgres transactions a second for 15-30 s after
    // each Redis blip (measured). One read of what Postgres leaves them, and only those whose
    // counter differs (or that are stranded) are reconciled.
    const left = due.length > 1 && deps.left ? await deps.left(due.map((d) => d.itemId)) : null;
    for (const d of due) {
      if (!d.stranded && left?.get(d.itemId) === d.units) {
        seen.set(d.itemId, d.mark);
        continue;
      }
      const [r] = await deps.catalog.reconcile({ itemId: d.itemId, idleOnly: true });
      // Set, or already right (`changed` says only that it was set to another value).
      if (r && (r.changed || r.redisHad === r.left)) seen.set(d.itemId, d.mark.replace(/\|[^|]*$/, `|${r.left}`));
    }
  };
}
