import type postgres from 'postgres';
import type { PgHealth } from '../db/health.js';
import { isConnectionLoss } from '../db/refusal.js';
import { readEnds, type LedgerEnd } from '../db/outcomes.js';
import { decideDoubts } from '../db/sales.js';
import type { Logger } from '../kernel/logger.js';
import { every } from '../kernel/loop.js';
import { ticketRef } from '../kernel/ticket-ref.js';
import type { Line } from '../queue/line.js';
import { itemState } from '../queue/snapshot.js';
import type { Outcome } from '../queue/types.js';
import { RUN_LEASE_MS, type JobQueues } from './jobs.js';
import type { HandlerRegistry } from './registry.js';
import { deadlineOf, saleResultOf } from './handler.js';

/**
 * Ends the tickets held in doubt. A ticket that was admitted and whose lease ran out (or that was
 * back at the head) when its item sold out or closed may have had its effect — a sale committed,
 * a webhook answered — just before its daemon died, with the settle lost; the cut's "sold out" or
 * "closed" would then be false, so such a ticket stays admitted in doubt (lua/_lib.lua
 * holdInDoubt). Every round this looks at the active items whose view counts tickets in doubt
 * and learns each one's outcome, by its handler:
 *
 * - one that sells through Postgres (`stockTable`: seckill, coupon): Postgres's rows for the
 *   tickets (db/sales.ts decideDoubts, under the item's stock lock) end each `succeeded` with its
 *   sale's result (`saleResult`; `{ id }` for a handler without one), or with the cut's outcome
 *   when Postgres holds none; such a ticket is voided there first, so no late job of its can sell
 *   after it was told so. Nothing is sold again: the item is sold out or closed.
 * - another in-process handler (webhook): the tickets run again, in a job as the dispatcher queues
 *   one, under new leases (relaunch-4.lua); the handler is idempotent (a webhook's Idempotency-Key
 *   is the ticket ref), and its answer ends them. Not those of a user blocked meanwhile (`held`):
 *   they wait for their last run's settle, then end rejected / blocked once no run can be left.
 * - an external one: the outside worker that held the ticket could settle it under its last lease
 *   the whole time (settle-9.lua); after the grace it ends with the cut's outcome.
 *
 * `graceMs`: a ticket is taken up only once it has been in doubt this long, so that a job whose
 * lease ran out while it still ran (a stalled event loop, not a dead daemon) has finished first;
 * such a job's own settle, if it comes before, ends the ticket anyway (settle-9.lua).
 */
export function startDoubtResolver(
  deps: {
    queue: Pick<Line, 'items' | 'admissions'>;
    handlers: HandlerRegistry;
    sql: postgres.Sql;
    pg: Pick<PgHealth, 'up' | 'markDown'>;
    jobs: Pick<JobQueues, 'dispatch' | 'leaseMs'>;
    log: Logger;
    now(): number;
    /** How many tickets left doubt, and how (sold, cut, relaunched). */
    onResolved?(itemId: string, how: 'sold' | 'cut' | 'relaunched', n: number): void;
  },
  opts: { everyMs: number; graceMs: number; dispatchLeaseMs: number },
) {
  const { queue, log } = deps;

  async function resolveItem(itemId: string) {
    // The held view, no Redis call: the dispatcher reads every active item's view each round.
    const item = queue.items.peek(itemId) ?? (await queue.items.item(itemId));
    if (!item?.snap.inDoubt) return;
    // Its view is cached: the item stays active while tickets wait here (a lease's grace may end first).
    queue.items.keepActive(itemId);
    let doubts = await queue.admissions.doubts(itemId, deps.now() - opts.graceMs);
    if (!doubts.length) return;
    const spec = deps.handlers.get(item.snap.def.handler);
    // A handler this daemon does not have (another daemon's own module): that daemon decides.
    if (!spec) return;
    if (spec.handle && !spec.external && !spec.stockTable) {
      const deadlineMs = deadlineOf(spec, item.snap.def.config);
      // Held ones (their user was blocked while they were back at the head) are not run again, which
      // would serve the user: their last run may still be calling (up to its deadline), and then
      // settles them or renews its lease (either takes them out of doubt, within RUN_LEASE_MS);
      // once no live run can be left, they end with their own outcome (rejected / blocked).
      if (doubts.some((d) => d.held)) {
        const since = deps.now() - Math.max(opts.graceMs, deadlineMs + RUN_LEASE_MS);
        const stale = (await queue.admissions.doubts(itemId, since)).filter((d) => d.held);
        // The end the ledger holds, if any (its run answered before a Redis rollback brought it
        // back), else their own (rejected / blocked); unread (Postgres away), a later round.
        const staleRefs = stale.map((d) => ticketRef(d.ticketId));
        const ledger = stale.length ? await readEnds(deps.sql, staleRefs).catch(() => null) : null;
        const ended = ledger ? await queue.admissions.resolveDoubts(itemId, stale.map((d, i) => ({ seq: d.seq, result: null, outcome: ledger.get(staleRefs[i]) as Outcome | undefined }))) : 0;
        if (ended) {
          deps.onResolved?.(itemId, 'cut', ended);
          log.warn({ itemId, ended }, 'tickets in doubt of blocked users ended without a run');
        }
      }
      await relaunch(itemId, spec.name, deadlineMs, doubts.filter((d) => !d.held), doubts.length);
      return;
    }
    if (!deps.pg.up && spec.stockTable) return;
    // The cut that put them in doubt no longer stands (an operator restocked or reopened the item
    // since): ending them with it told the first in line `sold_out` while later joiners bought the
    // new units. They run again, as a webhook's do: the sale is idempotent per ticket, so one whose
    // sale committed gets its order, and one whose did not buys now if a unit is left. (Held ones —
    // their user blocked since — still wait for Postgres's word below.) So do those no cut put
    // here: a held item's winners that a Redis rollback had put back in its line (held-winners.ts),
    // whose run finds no unit in the counter and answers the order their sale made.
    if (spec.handle && !spec.external && spec.stockTable) {
      const fresh = (await queue.items.item(itemId, { fresh: true }))?.snap;
      const state = fresh && itemState(fresh, deps.now());
      // (Not while the gate is closed or the sale not open yet: that would sell past the operator's
      // pause; they wait in doubt until the line moves.)
      if (fresh && (state === 'paused' || state === 'scheduled')) doubts = doubts.filter((d) => d.held);
      else if (fresh && state !== 'closed' && state !== 'sold_out') {
        let toRun = doubts.filter((d) => !d.held);
        // The ledger's `succeeded` stands, as after a cut (below): its user was told it before a
        // Redis rollback took it back, and an order released since leaves it succeeded. Run again,
        // such a ticket found its order released and ended `rejected` / `reservation_released`
        // (a review: a held item's winner who had released her order). Unread: a later round.
        const runRefs = toRun.map((d) => ticketRef(d.ticketId));
        const told = runRefs.length ? await readEnds(deps.sql, runRefs) : new Map<string, LedgerEnd>();
        const kept = toRun.flatMap((d, i) => {
          const end = told.get(runRefs[i]);
          return end?.status === 'succeeded' ? [{ seq: d.seq, result: null, outcome: end as Outcome }] : [];
        });
        if (kept.length) {
          const ended = await queue.admissions.resolveDoubts(itemId, kept);
          if (ended) deps.onResolved?.(itemId, 'sold', ended);
          const keptSeqs = new Set(kept.map((k) => k.seq));
          toRun = toRun.filter((d) => !keptSeqs.has(d.seq));
        }
        await relaunch(itemId, spec.name, deadlineOf(spec, fresh.def.config), toRun, doubts.length);
        doubts = doubts.filter((d) => d.held);
        if (!doubts.length) return;
      }
    }
    const refs = doubts.map((d) => ticketRef(d.ticketId));
    const sales = spec.stockTable ? await decideDoubts(deps.sql, spec.stockTable, itemId, refs) : new Map();
    // An outside worker's ticket whose end the ledger holds (its write-back, before a Redis
    // rollback took it back with its lease alive): that end, not the cut's.
    // Unread (Postgres away), they wait for a later round; the round goes on to the other items
    // (a webhook item's doubts behind it are run again without Postgres).
    // For a sale, the ledger's `succeeded` (its user was told it before a Redis rollback took the
    // end back; an order released since leaves that ticket succeeded, the contract says): it was
    // ended `rejected`/`reservation_released` below, while a daemon that saw the rollback answered
    // `succeeded` from the ledger.
    const ledger: Map<string, LedgerEnd> | null = await readEnds(deps.sql, refs).catch(() => null);
    if (!ledger) return;
    const entries = doubts.flatMap((d, i) => {
      const held = ledger.get(refs[i]);
      if (held && (!spec.stockTable || held.status === 'succeeded')) return [{ seq: d.seq, result: null, outcome: held as Outcome }];
      const sale = sales.get(refs[i]);
      // A row of another user (a ticket id issued twice after a Redis rollback) is not this ticket's sale.
      const own = sale && sale.userId === d.userId ? sale : undefined;
      // Its order was released meanwhile (a short reservation ran out while it waited here): no
      // sale of its any more, and the user may join again — not succeeded with a released order.
      if (own?.released) return [{ seq: d.seq, result: null, outcome: { status: 'rejected' as const, reason: 'reservation_released' } }];
      // Its reservation ran out and the sweep has not released it yet: left in doubt until it has
      // (then the branch above), not told `succeeded` with an order released moments later.
      // (By Postgres's clock, whose sweep releases it; only a reserved order lapses: a confirmed one
      // is paid for and never released, db/sales.ts ownSaleOf.)
      if (own?.lapsed) return [];
      return [{ seq: d.seq, result: own ? saleResultOf(spec, own) : null }];
    });
    // Counted as ended here: a ticket another daemon's resolver ended first, or its holder settled
    // meanwhile, is left alone by the script and counted where it ended (it was counted as asked:
    // two daemons counted 20 for 10 tickets). One call per kind, each answering how many it ended.
    const withSale = entries.filter((e) => e.result !== null);
    const without = entries.filter((e) => e.result === null);
    const sold = await queue.admissions.resolveDoubts(itemId, withSale);
    const cut = await queue.admissions.resolveDoubts(itemId, without);
    if (sold) deps.onResolved?.(itemId, 'sold', sold);
    if (cut) deps.onResolved?.(itemId, 'cut', cut);
    log.warn({ itemId, inDoubt: doubts.length, ended: sold + cut, sold }, 'tickets in doubt ended with their outcome');
  }

  /** Runs tickets in doubt again, in a job as the dispatcher queues one, under new leases. */
  async function relaunch(itemId: string, handler: string, deadlineMs: number, toRun: { seq: number }[], inDoubt: number) {
    if (!toRun.length) return;
    const tickets = await queue.admissions.relaunchDoubts(itemId, toRun.map((d) => d.seq), opts.dispatchLeaseMs);
    if (!tickets.length) return;
    await deps.jobs.dispatch(handler, [{ itemId, tickets }]);
    await queue.admissions.extendLeases(itemId, tickets.map((t) => ({ seq: t.seq, leaseId: t.leaseId })), deps.now() + deps.jobs.leaseMs(deadlineMs));
    deps.onResolved?.(itemId, 'relaunched', tickets.length);
    log.warn({ itemId, inDoubt, relaunched: tickets.length }, 'tickets in doubt run again');
  }

  async function round() {
    for (const itemId of await queue.items.activeItemIds()) {
      try {
        await resolveItem(itemId);
      } catch (err) {
        if (isConnectionLoss(err)) {
          deps.pg.markDown(String((err as { code?: string }).code ?? err));
          return;
        }
        // One item's failure (a Redis timeout, a job queue that refused) does not hold up the others.
        log.warn({ itemId, err: String(err) }, 'tickets in doubt not taken up this round');
      }
    }
  }
  return every(opts.everyMs, 'doubt resolver', round, log);
}
