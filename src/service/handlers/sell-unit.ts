import { SaleRefusedError, type SaleResult } from '../../db/sales.js';
import type { HandlerContext, HandlerTicket } from '../handler.js';

/**
 * The shared path of seckill and coupon: take a unit in Redis, commit the row in Postgres, give
 * the unit back if Postgres says no, and flip the item to sold out when the last unit is gone.
 */
export async function sellUnit(t: HandlerTicket, ctx: HandlerContext, table: 'orders' | 'coupon_claims'): Promise<SaleResult> {
  const took = await ctx.stock.take(t.itemId, t.seq);
  if (!took.taken) {
    await ctx.soldOut();
    return { kind: 'sold_out' };
  }
  let sale: SaleResult;
  try {
    sale = await ctx.sell(table, {
      itemId: t.itemId,
      userId: t.userId,
      ticketId: t.ticketId,
      payload: t.payload,
      perUser: table === 'coupon_claims' ? Number(t.config.perUser ?? 1) : undefined,
    });
  } catch (err) {
    // Postgres refused this ticket's row and wrote nothing: its unit goes back to the others.
    if (err instanceof SaleRefusedError) await ctx.stock.refund(t.itemId, t.seq);
    throw err;
  }
  if (sale.kind !== 'sold') await ctx.stock.refund(t.itemId, t.seq);
  if (sale.kind === 'sold_out' || (sale.kind === 'sold' && took.left === 0)) await ctx.soldOut();
  return sale;
}
