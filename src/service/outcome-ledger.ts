import { performance } from 'node:perf_hooks';
import type postgres from 'postgres';
import { insertDeadOutcomes, writeOutcomes } from '../db/outcomes.js';
import { isConnectionLoss } from '../db/refusal.js';
import type { Logger } from '../kernel/logger.js';
import { every } from '../kernel/loop.js';
import type { Metrics } from '../kernel/metrics.js';
import type { LedgerFeed } from './outcome-ledger-feed.js';
import type { Line } from '../queue/line.js';
import type { ItemSnapshot } from '../queue/snapshot.js';

/**
 * The outcome ledger: every ended ticket (succeeded, rejected, failed, cancelled, expired, and
 * the tickets a close or sell-out ended at once) lands in Postgres `ticket_outcomes` with its
 * times, in batches. Entries are acknowledged only after the insert commits, so a crash delays
 * rows but never drops them. One bad row does not stop it: a row Postgres refuses, and an entry
 * that cannot be read, is parked in `ticket_outcomes_dead` (counted in
 * floodgate_ledger_dead_letters_total) and acknowledged, and an item that fails does not hold up
 * the other items; only a lost connection ends a round.
 *
 * It is audit, not the hot path, so it yields: while this process's event loop was busier than
 * `busyElu` over the last interval (a flood of joins, a sale selling out), a round is skipped,
 * for at most `maxDeferMs` since the last drain. Writing the ledger during a sale took a tenth to
 * a fifth of the CPU per order (flood runs with and without); the rows land after the rush instead.
 */
export function startLedger(
  deps: { queue: Pick<Line, 'items'>; feed: LedgerFeed; sql: postgres.Sql; log: Logger; metrics: Pick<Metrics, 'ledgerDeadLetters'> },
  opts: { everyMs: number; batch: number; busyElu: number; maxDeferMs: number; stateTtlSec?: number },
) {
  async function drainItem(itemId: string) {
    const item = await deps.queue.items.item(itemId, { fresh: true });
    if (!item) return;
    // A split item's sub-lines end tickets on a stream each, on their own slots: one after another.
    for (let line = 0; line < (item.snap.def.lines ?? 1); line++) await drainLine(item.snap, line);
  }

  async function drainLine(snap: ItemSnapshot, line: number) {
    const itemId = snap.def.itemId;
    for (;;) {
      const { ids, tickets, unreadable } = await deps.feed.read(snap, opts.batch, line);
      if (!ids.length) break;
      deps.queue.items.keepActive(itemId);
      const dead = await writeOutcomes(deps.sql, tickets);
      if (unreadable.length) {
        const where = (snap.def.lines ?? 1) > 1 ? { line } : {};
        const entries = unreadable.map((u) => ({ itemId, ticketId: null, fields: { entry: u.id, ...where, fields: u.fields }, error: u.error }));
        await insertDeadOutcomes(deps.sql, entries);
        dead.push(...entries);
      }
      if (dead.length) {
        deps.metrics.ledgerDeadLetters.inc({ item: itemId }, dead.length);
        deps.log.warn({ itemId, tickets: dead.map((d) => d.ticketId), err: String(dead[0].error) }, 'outcome rows parked in ticket_outcomes_dead');
      }
      await deps.feed.ack(snap.def, ids, tickets.map((t) => t.seq), opts.stateTtlSec, line);
      if (ids.length < opts.batch) break;
    }
  }

  /** Every item in turn; one item that fails (other than by a lost connection) does not stop the others. */
  async function drain() {
    let failed: unknown;
    // The active items: every outcome keeps its item active, and a start or a reconnect makes every
    // item active (items.activateAll), so entries an outage or a crash left behind are written.
    for (const itemId of await deps.queue.items.activeItemIds()) {
      try {
        await drainItem(itemId);
      } catch (err) {
        if (isConnectionLoss(err)) throw err;
        deps.log.warn({ itemId, err: String(err) }, 'outcome ledger: item not drained');
        failed ??= err;
      }
    }
    // The loop reports a failing round (and its recovery) once.
    if (failed) throw failed;
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
