import { describe, expect, it } from 'vitest';
import { manualClock } from '../src/kernel/clock.js';
import { createLine } from '../src/queue/line.js';
import { createStockCounters } from '../src/service/stock-counters.js';
import type { LineDefinition } from '../src/queue/types.js';
import { testRedis } from './support/redis.js';

const t = testRedis();
const def = (itemId: string, handler: string, config: Record<string, unknown>): LineDefinition => ({ itemId, handler, config, capacity: null, abandonAfterMs: null, opensAt: null, closesAt: null, rejoin: 'any' });

/**
 * A waiting ticket of an item whose units are all taken reads `awaiting_returns`; `returnsFrom`
 * says what holds them, so that a page tells a buyer of an item without reservations that the
 * last units are being sold to the people ahead, not that everything is reserved.
 */
describe('what a ticket waiting for returned units is told', () => {
  it.each([
    { what: 'a seckill without reservations', handler: 'seckill', config: { stock: 1 }, returnsFrom: 'sales' },
    { what: 'a coupon', handler: 'coupon', config: { total: 1 }, returnsFrom: 'sales' },
    { what: 'a seckill that sells by reservation', handler: 'seckill', config: { stock: 1, reserveMs: 60_000 }, returnsFrom: 'reservations' },
  ])('$what: returnsFrom $returnsFrom while no unit is free, nothing once one is', async ({ handler, config, returnsFrom }) => {
    const clock = manualClock();
    const prefix = t.newPrefix();
    const queue = createLine({ redis: t.redis, prefix, clock, cacheMs: 0 });
    const stock = createStockCounters({ redis: t.redis, prefix, clock, items: queue.items });
    const item = `ret-${handler}-${returnsFrom}`;
    await queue.definitions.define(def(item, handler, config), { mode: 'manual', rate: 5, maxInFlight: null }, { reopen: false });
    await stock.set(item, 0, 1);
    const { ticket } = await queue.tickets.join(item, 'u1', null);
    expect(ticket).toMatchObject({ state: 'waiting', reason: 'awaiting_returns', returnsFrom });
    // Read again, as a poll reads it (not the join's own view).
    expect(await queue.tickets.status(ticket.ticketId)).toMatchObject({ reason: 'awaiting_returns', returnsFrom });
    await stock.set(item, 1, 1);
    const moving = await queue.tickets.status(ticket.ticketId);
    expect(moving.reason).toBeUndefined();
    expect(moving.returnsFrom).toBeUndefined();
  });
});
