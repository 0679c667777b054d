import type postgres from 'postgres';
import type { PgHealth } from '../db/health.js';
import { isConnectionLoss } from '../db/refusal.js';
import { salesOf } from '../db/sales.js';
import type { Logger } from '../kernel/logger.js';
import { every } from '../kernel/loop.js';
import { ticketRef } from '../kernel/ticket-ref.js';
import type { Line } from '../queue/line.js';
import type { HandlerRegistry } from './registry.js';

/**
 * Ends the tickets held in doubt with Postgres's word. A ticket of an item with stock whose lease
 * ran out (or that was back at the head) when its item sold out or closed may hold a sale that
 * committed just before its daemon died, with the settle lost; the cut's "sold out" would then be
 * false, so such a ticket stays admitted in doubt (lua/_lib.lua holdInDoubt). Every round this
 * looks at the active items whose view counts tickets in doubt, asks Postgres for their rows
 * (db/sales.ts salesOf, under the item's stock lock), and ends each: succeeded with its sale's
 * result (`saleResult` of the handler), or with the cut's outcome when Postgres holds none.
 *
 * `graceMs`: a ticket is asked about only once it has been in doubt this long, so that a job whose
 * lease ran out while it still ran (a stalled event loop, not a dead daemon) has finished its sale
 * first; such a job's own settle, if it comes before, ends the ticket anyway (settle-9.lua).
 */
export function startDoubtResolver(
  deps: { queue: Pick<Line, 'items' | 'admissions'>; handlers: HandlerRegistry; sql: postgres.Sql; pg: Pick<PgHealth, 'up' | 'markDown'>; log: Logger; now(): number },
  opts: { everyMs: number; graceMs: number },
) {
  const { queue, log } = deps;

  async function resolveItem(itemId: string) {
    // The held view, no Redis call: the dispatcher reads every active item's view each round.
    const item = queue.items.peek(itemId) ?? (await queue.items.item(itemId));
    if (!item?.snap.inDoubt) return;
    // Its view is cached: the item stays active while tickets wait here (a lease's grace may end first).
    queue.items.keepActive(itemId);
    const doubts = await queue.admissions.doubts(itemId, deps.now() - opts.graceMs);
    if (!doubts.length) return;
    const spec = deps.handlers.get(item.snap.def.handler);
    const sales = spec?.stockTable && spec.saleResult ? await salesOf(deps.sql, spec.stockTable, itemId, doubts.map((d) => ticketRef(d.ticketId))) : new Map();
    const entries = doubts.map((d) => {
      const sale = sales.get(ticketRef(d.ticketId));
      // A row of another user (a ticket id issued twice after a Redis rollback) is not this ticket's sale.
      return { seq: d.seq, result: sale && sale.userId === d.userId ? spec!.saleResult!(sale) : null };
    });
    const ended = await queue.admissions.resolveDoubts(itemId, entries);
    const sold = entries.filter((e) => e.result !== null).length;
    log.warn({ itemId, inDoubt: doubts.length, ended, sold }, 'tickets in doubt ended with postgres word on their sales');
  }

  async function round() {
    if (!deps.pg.up) return;
    for (const itemId of await queue.items.activeItemIds()) {
      try {
        await resolveItem(itemId);
      } catch (err) {
        if (!isConnectionLoss(err)) throw err;
        deps.pg.markDown(String((err as { code?: string }).code ?? err));
        return;
      }
    }
  }
  return every(opts.everyMs, 'doubt resolver', round, log);
}
