import { z } from 'zod';
import type { HandlerSpec } from '../handler.js';
import { sellUnit } from './sell-unit.js';

/**
 * seckill: one unit per user per item. A unit is taken from the Redis stock (idempotent per
 * ticket), then the order row is committed in Postgres, which has the last word (see db/sales.ts);
 * the ticket succeeds only after that commit, with `{ orderId }`. With `reserveMs` the order is
 * reserved until `reservedUntil` (result `{ orderId, reservedUntil }`) and must be confirmed by then
 * (POST /v1/orders/{orderId}/confirm), else it is released and its unit goes to the next in line
 * (service/reservations.ts).
 */
export const seckill: HandlerSpec = {
  name: 'seckill',
  config: z
    .object({
      stock: z.number().int().min(0).max(1e9),
      shards: z.number().int().min(1).max(64).default(1),
      /** Two-phase sale: how long a reservation waits for its confirm (ms, up to 7 days). */
      reserveMs: z.number().int().min(100).max(7 * 86_400_000).optional(),
    })
    .strict(),
  rejoin: () => 'unless_succeeded',
  external: false,
  initialStock: (c) => Number(c.stock),
  stockTable: 'orders',
  stockShards: (c) => Number(c.shards ?? 1),
  saleResult: (sale) => (sale.reservedUntil ? { orderId: sale.id, reservedUntil: sale.reservedUntil } : { orderId: sale.id }),
  deadlineMs: () => 10_000,
  selfLimited: { maxInFlight: 1000 },
  async handle(t, ctx) {
    const reserveMs = t.config.reserveMs === undefined ? undefined : Number(t.config.reserveMs);
    const sale = await sellUnit(t, ctx, 'orders', reserveMs);
    if (sale.kind === 'sold') return { status: 'succeeded', result: seckill.saleResult!(sale) };
    // Its order was released before it heard of it (a run again after a crash, past a short
    // reservation): no order is its any more, and the user may join again.
    if (sale.kind === 'released') return { status: 'rejected', reason: 'reservation_released' };
    return { status: 'rejected', reason: sale.kind === 'limit_reached' ? 'already_purchased' : 'sold_out' };
  },
};
