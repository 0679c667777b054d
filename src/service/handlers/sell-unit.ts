import type { SaleResult } from '../../db/sales.js';
import { ticketRef } from '../../kernel/ticket-ref.js';
import { RequeueError, type HandlerContext, type HandlerTicket } from '../handler.js';

/**
 * The shared path of seckill and coupon: take a unit in Redis, commit the row in Postgres, give the
 * unit back if Postgres says no. Postgres alone decides "sold out" (units left under its stock
 * lock): when the Redis counter is empty but Postgres still has units, they are held by tickets in
 * flight, and this ticket goes back to the head of the line to wait for one of them to come back
 * (admissions pause while the counter is empty). When Postgres cannot be reached the unit is given
 * back and the ticket waits at the head too: an outage is a pause, never a refusal.
 */
export async function sellUnit(t: HandlerTicket, ctx: HandlerContext, table: 'orders' | 'coupon_claims'): Promise<SaleResult> {
  const took = await ctx.stock.take(t.itemId, t.seq);
  if (!took.taken) {
    if (await ctx.confirmSoldOut()) return { kind: 'sold_out', left: 0 };
    throw new RequeueError('awaiting_returns');
  }
  let sale: SaleResult;
  try {
    sale = await ctx.sell(table, {
      itemId: t.itemId,
      userId: t.userId,
      ticketRef: ticketRef(t.ticketId),
      payload: t.payload,
      perUser: table === 'coupon_claims' ? Number(t.config.perUser ?? 1) : undefined,
    });
  } catch (err) {
    // Whatever ends this run without a sale gives the unit back (the settle scripts do so as
    // well; this makes it available to the next ticket at once).
    await ctx.stock.refund(t.itemId, t.seq).catch(() => {});
    throw err;
  }
  if (sale.kind !== 'sold') await ctx.stock.refund(t.itemId, t.seq);
  if (sale.left <= 0) await ctx.soldOut();
  if (sale.kind === 'foreign') throw Object.assign(new Error('ticket_conflict'), { permanent: true });
  return sale;
}
