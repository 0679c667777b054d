import { performance } from 'node:perf_hooks';
import { throttledWarn } from '../kernel/throttled-warn.js';
import type postgres from 'postgres';
import { insertDeadOutcomes, voidCancelled, writeOutcomes } from '../db/outcomes.js';
import { isConnectionLoss } from '../db/refusal.js';
import type { Logger } from '../kernel/logger.js';
import { every } from '../kernel/loop.js';
import type { Metrics } from '../kernel/metrics.js';
import type { EndedTicket, LedgerFeed, UnreadableEntry } from './outcome-ledger-feed.js';
import type { Line } from '../queue/line.js';
import type { ItemSnapshot } from '../queue/snapshot.js';

/** Items drained together: their reads at once, their rows in one statement. */
const GROUP = 100;

/** Records a failed step of a round (rethrows a lost connection). */
type Skip = (err: unknown, where: Record<string, unknown>) => void;

/** A line to read: its item's definition and the item's view, read once a line has entries (shared by its lines). */
interface LineToRead {
  def: { itemId: string; lines?: number };
  line: number;
  snapshot: () => Promise<ItemSnapshot | null>;
}

/** One line's entries read in a round, and what to write for them. */
interface Read {
  snap: ItemSnapshot;
  /** The line read (its `line` is the sub-line's index). */
  source: LineToRead;
  ids: string[];
  tickets: EndedTicket[];
  seqsOf: number[][];
  unreadable: UnreadableEntry[];
}

/**
 * The outcome ledger: every ended ticket (succeeded, rejected, failed, cancelled, expired, and
 * the tickets a close or sell-out ended at once) lands in Postgres `ticket_outcomes` with its
 * times, in batches. Entries are acknowledged only after the insert commits, so a crash delays
 * rows but never drops them. One bad row does not stop it: a row Postgres refuses for what it
 * holds, and an entry that cannot be read, is parked in `ticket_outcomes_dead` (counted in
 * floodgate_ledger_dead_letters_total) and acknowledged (db/outcomes.ts; an error that would refuse
 * every row alike parks nothing and leaves the entries for a later round), and an item or a group
 * of items that fails does not hold up the others; only a lost connection ends a round.
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
  /**
   * An item's lines to read: an unsplit item's one, each sub-line of a split item (on its own slot).
   * Its view is read fresh only when a line has entries (200 active items with nothing ended had
   * cost 400 view reads a second), and after them (feed.readFrom). How many lines it has comes from
   * the view held now, however old (the dispatcher reads an active item's view by age every round).
   */
  async function linesOf(itemId: string): Promise<LineToRead[]> {
    const item = deps.queue.items.peek(itemId) ?? (await deps.queue.items.item(itemId));
    if (!item) return [];
    let fresh: Promise<ItemSnapshot | null> | null = null;
    const snapshot = () => (fresh ??= deps.queue.items.item(itemId, { fresh: true }).then((i) => i?.snap ?? null));
    return Array.from({ length: item.snap.def.lines ?? 1 }, (_, line) => ({ def: item.snap.def, line, snapshot }));
  }

  /**
   * Reads every given line once (all at once: their Redis calls go out together), writes all their
   * rows in one statement, then acknowledges each line's entries. Returns the lines that read a
   * full batch (more may wait); a line whose read or acknowledgement failed goes to `skip`.
   */
  async function drainLines(lines: LineToRead[], skip: Skip): Promise<LineToRead[]> {
    const reads = (
      await Promise.all(
        lines.map((source) =>
          deps.feed.readFrom(source.def, opts.batch, source.line, source.snapshot).then(
            (r): Read | null => (r.snap ? { ...r, snap: r.snap, source } : null),
            (err: unknown) => (skip(err, { itemId: source.def.itemId, line: source.line }), null),
          ),
        ),
      )
    ).filter((r): r is Read => r !== null && r.ids.length > 0);
    if (!reads.length) return [];
    for (const r of reads) deps.queue.items.keepActive(r.snap.def.itemId);
    const rows = reads.flatMap((r) => r.tickets);
    let dead: Awaited<ReturnType<typeof writeOutcomes>>;
    try {
      dead = await writeOutcomes(deps.sql, rows);
      await voidCancelled(deps.sql, rows);
    } catch (err) {
      // Unwritten: their items stay active from now (the grace above ran from before a write that
      // can take minutes — statement timeouts split and tried again), or an ended item left the
      // active set and its entries waited for the next start.
      for (const r of reads) deps.queue.items.keepActive(r.snap.def.itemId);
      throw err;
    }
    const unreadable = reads.flatMap((r) =>
      r.unreadable.map((u) => ({ itemId: r.snap.def.itemId, ticketId: null, fields: { entry: u.id, ...((r.snap.def.lines ?? 1) > 1 ? { line: r.source.line } : {}), fields: u.fields }, error: u.error })),
    );
    // (Only what was parked now: a round that reads again what an acknowledgement Redis did not take parks nothing new.)
    dead.push(...(await insertDeadOutcomes(deps.sql, unreadable)));
    const deadByItem = new Map<string, typeof dead>();
    for (const d of dead) {
      const list = deadByItem.get(d.itemId);
      if (list) list.push(d);
      else deadByItem.set(d.itemId, [d]);
    }
    for (const [itemId, ds] of deadByItem) {
      deps.metrics.ledgerDeadLetters.inc({ item: itemId }, ds.length);
      deps.log.warn({ itemId, tickets: ds.map((d) => d.ticketId), err: String(ds[0].error) }, 'outcome rows parked in ticket_outcomes_dead');
    }
    const acked = await Promise.all(
      reads.map((r) =>
        deps.feed.ack(r.snap.def, r.ids, r.seqsOf, opts.stateTtlSec, r.source.line).then(
          () => true,
          // Its rows are written; they are read again next round and kept once (on conflict do nothing).
          (err: unknown) => (skip(err, { itemId: r.snap.def.itemId, line: r.source.line }), false),
        ),
      ),
    );
    return reads.filter((r, i) => acked[i] && r.ids.length >= opts.batch).map((r) => r.source);
  }

  /**
   * Every active item, GROUP at a time: their lines read together and their rows written in one
   * statement (one statement and one read after another per item made 200 items on sale cost 200
   * Postgres calls a round). One item or group that fails (other than by a lost connection) does
   * not stop the others.
   */
  // (While Redis refuses writes every active item fails each round: six lines a second in a review.)
  const notDrained = throttledWarn(deps.log, 'outcome ledger: item not drained');
  async function drain() {
    let failed: unknown;
    // A step that failed other than by a lost connection (which ends the round): logged, its item
    // left for the next round, the round reported failed once the others are done.
    const skip: Skip = (err, where) => {
      if (isConnectionLoss(err)) throw err;
      notDrained({ ...where, err: String(err) });
      failed ??= err;
    };
    // The active items: every outcome keeps its item active, and a start or a reconnect makes every
    // item active (items.activateAll), so entries an outage or a crash left behind are written.
    const ids = await deps.queue.items.activeItemIds();
    for (let i = 0; i < ids.length; i += GROUP) {
      const found = await Promise.all(ids.slice(i, i + GROUP).map((itemId) => linesOf(itemId).catch((err: unknown) => (skip(err, { itemId }), []))));
      try {
        for (let lines = found.flat(); lines.length; ) lines = await drainLines(lines, skip);
      } catch (err) {
        // The group's rows could not be written (nothing of it acknowledged): the next groups go on.
        skip(err, { items: found.flat().map((l) => l.def.itemId) });
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
