import { z } from 'zod';
import type { HandlerSpec } from '../handler.js';
import { sellUnit } from './sell-unit.js';

/**
 * coupon: `total` coupons, at most `perUser` per user (a database constraint: claim_no 1..per_user
 * is unique per user). A user may join again after a claim while under the limit.
 */
export const coupon: HandlerSpec = {
  name: 'coupon',
  config: z.object({ total: z.number().int().min(0).max(1e9), perUser: z.number().int().min(1).max(1000).default(1), shards: z.number().int().min(1).max(64).default(1) }).strict(),
  rejoin: (c) => (Number(c.perUser ?? 1) > 1 ? `unless_succeeded:${Number(c.perUser)}` : 'unless_succeeded'),
  external: false,
  initialStock: (c) => Number(c.total),
  stockTable: 'coupon_claims',
  stockShards: (c) => Number(c.shards ?? 1),
  saleResult: (sale) => ({ claimId: sale.id }),
  deadlineMs: () => 10_000,
  selfLimited: { maxInFlight: 1000 },
  async handle(t, ctx) {
    const sale = await sellUnit(t, ctx, 'coupon_claims');
    if (sale.kind === 'sold') return { status: 'succeeded', result: coupon.saleResult!(sale) };
    return { status: 'rejected', reason: sale.kind === 'limit_reached' ? 'limit_reached' : 'sold_out' };
  },
};
