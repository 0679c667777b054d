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
 */
export function startLedger(deps: { queue: Queue; feed: LedgerFeed; sql: postgres.Sql; log: Logger }, opts: { everyMs: number; batch: number }) {
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
  const loop = every(opts.everyMs, 'outcome ledger', drain, deps.log);
  return { drain, stop: () => loop.stop() };
}
