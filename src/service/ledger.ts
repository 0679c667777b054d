import { performance } from 'node:perf_hooks';
import type postgres from 'postgres';
import { insertOutcomes } from '../db/outcomes.js';
import type { Logger } from '../kernel/logger.js';
import { every } from '../kernel/loop.js';
import type { LedgerFeed } from '../queue/ledger-feed.js';
import type { Queue } from '../queue/queue.js';

/**
 * The outcome ledger: every ended ticket (succeeded, rejected, failed, cancelled, expired, and
 * the tickets a close or sell-out ended at once) lands in Postgres `ticket_outcomes` with its
 * times, in batches. Entries are acknowledged only after the insert commits, so a crash delays
 * rows but never drops them.
 *
 * It is audit, not the hot path, so it yields: while this process's event loop was busier than
 * `busyElu` over the last interval (a flood of joins, a sale selling out), a round is skipped,
 * for at most `maxDeferMs` since the last drain. Writing the ledger during a sale took a tenth to
 * a fifth of the CPU per order (flood runs with and without); the rows land after the rush instead.
 */
export function startLedger(
  deps: { queue: Queue; feed: LedgerFeed; sql: postgres.Sql; log: Logger },
  opts: { everyMs: number; batch: number; busyElu: number; maxDeferMs: number },
) {
  async function drain() {
    for (const itemId of await deps.queue.itemIds()) {
      const item = await deps.queue.item(itemId, { fresh: true });
      if (!item) continue;
      for (;;) {
        const { ids, tickets } = await deps.feed.read(item.snap, opts.batch);
        if (!ids.length) break;
        await insertOutcomes(deps.sql, tickets);
        await deps.feed.ack(itemId, ids);
        if (ids.length < opts.batch) break;
      }
    }
  }
  let lastDrain = performance.now();
  let elu = performance.eventLoopUtilization();
  async function round() {
    const busy = performance.eventLoopUtilization(elu).utilization > opts.busyElu;
    elu = performance.eventLoopUtilization();
    if (busy && performance.now() - lastDrain < opts.maxDeferMs) return;
    await drain();
    lastDrain = performance.now();
  }
  const loop = every(opts.everyMs, 'outcome ledger', round, deps.log);
  return { drain, stop: () => loop.stop() };
}
