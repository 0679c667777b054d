import type { PgHealth } from '../db/health.js';
import type { Logger } from '../kernel/logger.js';
import { every } from '../kernel/loop.js';
import type { Line } from '../queue/line.js';
import { itemState } from '../queue/snapshot.js';

/**
 * Winners a Redis rollback put back in the line of an item held on its reservations. An item whose
 * every unit is sold or reserved runs no sale and is not cut (a unit may come back), so a winner
 * whose admission the rollback took waits in the line again while Postgres holds their
 * reservation, and no unit comes back to admit them: they read `waiting` until the reservation
 * ran out, then `rejected` / `reservation_released`, and the unit went to the next in line. Such
 * an item's waiting tickets whose sale Postgres holds are taken out of the line and held in doubt
 * (definitions.holdBought); the doubt resolver runs them again, and the sale, idempotent per
 * ticket, answers each its own order (no unit taken: the counter has none, and the order is the
 * ticket's unit).
 *
 * When. Only a rollback makes such a ticket (a sale is made by the ticket's own admission), and a
 * rollback is seen by a daemon as its item view's counters going back (item-cache.ts: the view's
 * generation moves), as a Redis reconnect (a restart from an older AOF or snapshot; on a cluster,
 * a failover: `recheck`), or not at all by a daemon started after it. So each held item with
 * tickets waiting is looked at once per daemon life, item life, rollback seen and reconnect: its
 * mark is kept, and a round that finds it unchanged costs a map lookup. The round reads the active
 * items' cached views (no Redis call); an idle item is not active, and one that is not held, or
 * holds nobody waiting, is passed over. (Not after every rollback only: a daemon started after one
 * never sees it, and it is the one that must look.) A look is one read of the item's latest sales
 * and succeeded ends (the cut's look, bounded) and one of the buyers' seqs in Redis; one Postgres
 * did not answer is tried again after `retryMs`.
 */
export function startHeldWinnerWatch(
  deps: {
    queue: Pick<Line, 'items' | 'definitions'>;
    pg: Pick<PgHealth, 'up'>;
    /** Whether the handler sells through Postgres (a stock table): only its sales can be looked up. */
    sellsThroughPostgres(handler: string): boolean;
    log: Logger;
    now(): number;
  },
  opts: { everyMs: number; retryMs: number },
) {
  const { queue, log } = deps;
  /** Per item: the mark (item life, rollbacks seen, reconnects) it was last looked at under. */
  const looked = new Map<string, string>();
  /** Per item: when a look Postgres did not answer failed. */
  const failedAt = new Map<string, number>();
  /** Redis reconnects (and cluster failovers) seen: each may have been a rollback no view saw. */
  let reconnects = 0;

  async function round() {
    if (!deps.pg.up) return;
    const ids = await queue.items.activeItemIds();
    if (looked.size > 2 * ids.length + 1000) {
      const active = new Set(ids);
      for (const m of [looked, failedAt]) for (const id of m.keys()) if (!active.has(id)) m.delete(id);
    }
    for (const itemId of ids) {
      const item = queue.items.peek(itemId);
      const now = deps.now();
      if (!item || item.snap.counts.waiting === 0 || itemState(item.snap, now) !== 'held' || !deps.sellsThroughPostgres(item.snap.def.handler)) continue;
      // The mark as of before the look: a rollback seen during it moves the mark, and the item is looked at again.
      const mark = `${item.recordKey}#${reconnects}`;
      if (looked.get(itemId) === mark || now - (failedAt.get(itemId) ?? -Infinity) < opts.retryMs) continue;
      try {
        const held = await queue.definitions.holdBought(itemId);
        looked.set(itemId, mark);
        failedAt.delete(itemId);
        if (held) {
          log.warn({ itemId, held }, 'winners a redis rollback put back in the line of an item held on its reservations taken out of it, in doubt until their orders answer');
        }
      } catch (err) {
        failedAt.set(itemId, now);
        log.warn({ itemId, err: String(err) }, 'sales of an item held on its reservations not read: looked at again later');
      }
    }
  }

  const loop = every(opts.everyMs, 'held winners', round, log);
  return {
    stop: () => loop.stop(),
    /** A Redis reconnect (or a cluster's slots moved): every held item is looked at again. */
    recheck() {
      reconnects++;
    },
  };
}
