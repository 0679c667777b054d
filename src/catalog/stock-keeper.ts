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
 * - an item that sold, refunded or admitted anything since the last round: a counter rolled back
 *   to an older, higher value is brought down (Postgres would refuse the extra sales anyway, but
 *   the item view's `remaining` must be true).
 *
 * The reconcile itself is safe during a sale: the counter is set only if no ticket is admitted at
 * that moment (checked inside the set-stock script).
 */
export function startStockKeeper(deps: { queue: Pick<Line, 'items'>; catalog: Catalog; pg: Pick<PgHealth, 'up'>; log: Logger }, opts: { everyMs: number }) {
  const seen = new Map<string, string>();
  async function round() {
    if (!deps.pg.up) return;
    for (const itemId of await deps.queue.items.activeItemIds()) {
      const s = deps.queue.items.peek(itemId)?.snap;
      if (!s || s.stockLeft === null || s.counts.admitted > 0) continue;
      const mark = `${s.secret}|${s.seq}|${s.admissions}|${s.counts.succeeded}|${s.counts.rejected}|${s.counts.failed}|${s.stockLeft}`;
      const stranded = s.stockLeft === 0 && !s.soldOut && !s.closed && s.counts.waiting > 0;
      if (!stranded && seen.get(itemId) === mark) continue;
      const [r] = await deps.catalog.reconcile({ itemId, idleOnly: true });
      if (r?.changed) seen.set(itemId, mark.replace(/\|[^|]*$/, `|${r.left}`));
    }
  }
  return every(opts.everyMs, 'stock keeper', round, deps.log);
}
