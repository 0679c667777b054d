import type postgres from 'postgres';
import { createLogger } from '../../src/kernel/logger.js';
import type { RedisLike } from '../../src/redis/client.js';
import { createLedgerFeed } from '../../src/service/outcome-ledger-feed.js';
import { startLedger } from '../../src/service/outcome-ledger.js';

/**
 * Two rounds of the outcome ledger (the daemon runs one every 250 ms) over the prefix's ended
 * tickets, then its stop: what a test needs before it reads ticket_outcomes.
 */
export async function drainLedger(deps: { queue: Parameters<typeof startLedger>[0]['queue']; redis: RedisLike; prefix: string; sql: postgres.Sql; metrics: Parameters<typeof startLedger>[0]['metrics']; consumer: string }) {
  const ledger = startLedger(
    { queue: deps.queue, feed: createLedgerFeed(deps.redis, deps.prefix, deps.consumer), sql: deps.sql, log: createLogger('silent'), metrics: deps.metrics },
    { everyMs: 3_600_000, batch: 100, busyElu: 1, maxDeferMs: 0 },
  );
  try {
    await ledger.drain();
    await ledger.drain();
  } finally {
    await ledger.stop();
  }
}

/** Holds `ticket_outcomes` locked (access exclusive) on `holder`'s connection until `release()`; `held` settles once it is let go. */
export async function lockOutcomes(holder: postgres.Sql): Promise<{ release(): void; held: Promise<unknown> }> {
  let release!: () => void;
  let locked!: () => void;
  const isLocked = new Promise<void>((r) => (locked = r));
  const held = holder.begin(async (tx) => {
    await tx`lock table ticket_outcomes in access exclusive mode`;
    locked();
    await new Promise<void>((r) => (release = r));
  });
  await isLocked;
  return { release, held };
}
