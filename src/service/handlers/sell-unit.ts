import type { SaleResult } from '../../db/sales.js';
import { ticketRef } from '../../kernel/ticket-ref.js';
import { RequeueError, type HandlerContext, type HandlerTicket } from '../handler.js';

/**
 * The shared path of seckill and coupon: take a unit in Redis, commit the row in Postgres, give the
 * unit back if Postgres says no. Postgres alone decides "sold out" (no unit left and none reserved,
 * under its stock lock): when the Redis counter is empty but Postgres still has units, they are held
 * by tickets in flight, or reserved and not yet confirmed (they may be released), and this ticket
 * goes back to the head of the line to wait for one of them to come back (admissions pause while
 * the counter is empty). When Postgres cannot be reached the unit is given back and the ticket
 * waits at the head too: an outage is a pause, never a refusal.
 */
export async function sellUnit(t: HandlerTicket, ctx: HandlerContext, table: 'orders' | 'coupon_claims', reserveMs?: number): Promise<SaleResult> {
  const took = await ctx.stock.take(t.itemId, t.seq);
  // A run that stalled and went on after another run of the ticket ended it: it sells nothing
  // (Postgres would answer the other run's order again) and takes no unit; its settle is refused.
  if (took.ended) throw Object.assign(new Error('ticket_not_admitted'), { permanent: true });
  if (!took.taken) {
    // No unit for it, but an earlier run of this ticket may have sold (its answer lost to a
    // Postgres connection dropped after the commit, or its daemon killed before the settle; its
    // unit went back meanwhile and another ticket took it): its order stands, not `sold_out`.
    const own = await ctx.ownSale(table, ticketRef(t.ticketId), t.userId);
    // (Its reservation released since: no order is its any more, as a replay would answer.)
    if (own?.released) return { kind: 'released', left: 0, reserved: 0 };
    if (own) {
      lapsedReservation(own);
      return { kind: 'sold', id: own.id, replay: true, left: 0, reserved: 0, ...(own.reservedUntil && { reservedUntil: own.reservedUntil }), ...(own.confirmed && { confirmed: true }), ...(own.lapsed && { lapsed: true }) };
    }
    if (await ctx.confirmSoldOut()) return { kind: 'sold_out', left: 0, reserved: 0 };
    throw new RequeueError('awaiting_returns');
  }
  let sale: SaleResult & { decidedAt: number };
  try {
    sale = await ctx.sell(table, {
      itemId: t.itemId,
      userId: t.userId,
      ticketRef: ticketRef(t.ticketId),
      payload: t.payload,
      perUser: table === 'coupon_claims' ? Number(t.config.perUser ?? 1) : undefined,
      reserveMs,
    });
  } catch (err) {
    // Whatever ends this run without a sale gives the unit back (the settle scripts do so as
    // well; this makes it available to the next ticket at once).
    await ctx.stock.refund(t.itemId, t.seq).catch(() => {});
    throw err;
  }
  if (sale.kind === 'sold_out' && sale.reserved > 0) {
    // No unit for a ticket that held one in Redis: the counter was one over (a released unit given
    // back twice, by a recount and by its release). Drop that unit and wait for a real one.
    await ctx.stock.forfeit(t.itemId, t.seq);
    throw new RequeueError('awaiting_returns');
  }
  // Postgres has decided (a sale, or none): what follows in Redis is housekeeping, and a Redis that
  // cannot take it this moment (a stall past the command timeout) must not turn the decided
  // outcome into `failed` — the user's order is in Postgres. The settle gives a unit back too, and
  // the cut is made by the next ticket that finds the counter empty (confirmSoldOut) or the stock keeper.
  const later = (what: string) => (err: unknown) => ctx.log.warn({ itemId: t.itemId, seq: t.seq, err: String(err) }, `${what} not done after a decided sale; done later`);
  // A released order's unit went back to the stock with its release (and this run took another):
  // the one this run holds goes back only as far as Postgres has units (given back a second time,
  // the counter ran one over Postgres, an extra ticket admitted, until the stock keeper's recount).
  // Not dropped outright: the release's own give-back stops at the same bound, and where the
  // counter already held that unit (the first run's, given back when its lease ran out) it gave
  // none, and the drop then left the counter one under Postgres (a unit nobody was admitted to).
  if (sale.kind === 'released') await ctx.stock.refund(t.itemId, t.seq, sale.left).catch(later('unit drop'));
  else if (sale.kind !== 'sold') await ctx.stock.refund(t.itemId, t.seq).catch(later('unit refund'));
  if (sale.kind === 'sold') lapsedReservation(sale);
  if (sale.left <= 0 && sale.reserved === 0) await ctx.soldOut(sale.decidedAt).catch(later('sold-out cut'));
  if (sale.kind === 'foreign') throw Object.assign(new Error('ticket_conflict'), { permanent: true });
  // Ended without a sale while in doubt (service/doubt-resolver.ts), and its user told so: this run
  // stalled past its lease and the grace. Its settle is refused, as the ticket has ended.
  if (sale.kind === 'void') throw Object.assign(new Error('ticket_voided'), { permanent: true });
  return sale;
}

/**
 * An earlier run's order whose reservation ran out and that the sweep has not released yet (it
 * will, within a second; no confirm takes it now): the ticket goes back to the head and waits for
 * the release (its next run answers `reservation_released`). Answered as a sale, its user was told
 * `succeeded` with an order released moments later (a reviewer's runs: after a daemon kill and a
 * Postgres cut, 7 and 10 users, 0.1 s before the release). Ending it here, before the release, let
 * the user join again while the order still counted as theirs, and the release then marked the
 * new ticket.
 */
function lapsedReservation(sale: { lapsed?: boolean }) {
  // (Lapsed by Postgres's clock, and only a reserved order lapses: a confirmed one is paid for and
  // never released, db/sales.ts ownSaleOf.)
  if (sale.lapsed) throw new RequeueError('awaiting_release');
}
