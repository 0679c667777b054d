import { describe, expect, it } from 'vitest';
import { systemClock } from '../src/kernel/clock.js';
import { createLogger } from '../src/kernel/logger.js';
import { createReservations } from '../src/service/reservations.js';
import { createStockCounters } from '../src/service/stock-counters.js';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { testRedis } from './support/redis.js';

/**
 * A reservation released after an operator lowered the stock under what was sold and reserved:
 * Postgres drops its unit (total follows max(target, sold), drizzle/0013), and Redis must not give
 * it back either. It did (a review's model run): the item read `open`, `remaining: 1`, took the
 * next user's join, admitted the ticket and told it `sold_out` — seconds before the stock keeper
 * counted again. Two daemons on one Redis prefix and one database, as in production.
 */
const { prefix, redis } = testRedis();
const db = await testDb();
const A = await inProcessDaemon({ prefix, databaseUrl: db.url });
const B = await inProcessDaemon({ prefix, databaseUrl: db.url });
const TERMINAL = new Set(['succeeded', 'rejected', 'failed', 'cancelled', 'expired']);
const ended = (d: typeof A, id: string) => waitFor(async () => (await d.call('GET', `/v1/tickets/${id}`, undefined, null)).body, (v) => TERMINAL.has(v.state), 20_000);

describe('a reservation released under a lowered stock', () => {
  it.each(['release', 'expiry'] as const)('gives no unit back (%s): the item does not read open, and the next user is not admitted to be told sold_out', async (how) => {
    const item = `low-${how}`;
    expect((await A.define(item, { handler: 'seckill', config: { stock: 2, reserveMs: how === 'expiry' ? 1000 : 600_000 } })).status).toBe(201);
    const v1 = await ended(A, (await A.call('POST', `/v1/items/${item}/tickets`, { userId: 'u1' }, SVC)).body.ticketId);
    const v2 = await ended(B, (await B.call('POST', `/v1/items/${item}/tickets`, { userId: 'u2' }, SVC)).body.ticketId);
    expect([v1.state, v2.state]).toEqual(['succeeded', 'succeeded']);
    expect((await A.call('POST', `/v1/orders/${v1.outcome.result.orderId}/confirm`, undefined, SVC)).status).toBe(200);
    // One unit for sale now, and two sold (one confirmed, one reserved): none left to sell.
    const put = await B.call('PUT', `/v1/items/${item}`, { handler: 'seckill', config: { stock: 1, reserveMs: how === 'expiry' ? 1000 : 600_000 } });
    expect(put.status).toBe(200);
    if (how === 'release') expect((await B.call('POST', `/v1/orders/${v2.outcome.result.orderId}/release`, undefined, SVC)).status).toBe(200);
    // Released (by the shop, or by the sweep once it ran out): Postgres has nothing left to sell.
    await waitFor(() => db.sql`select status from orders where order_id = ${v2.outcome.result.orderId}`, (r) => r[0]?.status === 'released', 20_000);
    const [pg] = await db.sql`select total - sold as left, reserved from item_stock where item_id = ${item}`;
    expect([pg.left, pg.reserved]).toEqual([0, 0]);
    for (const d of [A, B]) {
      const view = (await d.call('GET', `/v1/items/${item}`)).body;
      expect(view.remaining).toBe(0);
      expect(view.state).not.toBe('open');
    }
    // The next user is told at once (410), not admitted to a unit that is not there.
    const j3 = await A.call('POST', `/v1/items/${item}/tickets`, { userId: 'u3' }, SVC);
    if (j3.status === 202) {
      const v3 = await ended(A, j3.body.ticketId);
      expect(v3.admittedAt).toBeUndefined();
      expect(v3).toMatchObject({ state: 'rejected', outcome: { reason: 'sold_out' } });
    } else expect([j3.status, j3.body.error.code]).toEqual([410, 'sold_out']);
    const orders = await db.sql`select status from orders where item_id = ${item} and status <> 'released'`;
    expect(orders.length).toBe(1);
  });

  it('gives both units back when two releases of one item overlap, the later one given back first', async () => {
    // Each release's bound is what Postgres has left once it committed. Read before the other
    // release committed and used after that one's give-back, it was one low, and a unit Postgres
    // had for sale was dropped in Redis (a review: the counter at 1 of 2 until the stock keeper's
    // next count, which waits for no ticket of the item to be out). The bound is now read, and the
    // unit given back, under the item's stock row lock, which a release takes to commit.
    const item = 'two-releases';
    expect((await A.define(item, { handler: 'seckill', config: { stock: 2, reserveMs: 600_000 } })).status).toBe(201);
    const v1 = await ended(A, (await A.call('POST', `/v1/items/${item}/tickets`, { userId: 'u1' }, SVC)).body.ticketId);
    const v2 = await ended(A, (await A.call('POST', `/v1/items/${item}/tickets`, { userId: 'u2' }, SVC)).body.ticketId);
    const items = { invalidate() {}, keepActive() {}, peek: () => undefined, item: async () => null } as never;
    const counters = createStockCounters({ redis: redis as never, prefix, clock: systemClock, items });
    const reservations = (late?: { reached(): void; go: Promise<unknown> }) =>
      createReservations({
        sql: db.sql,
        queue: { definitions: {} } as never,
        log: createLogger('silent'),
        onReturned: () => {},
        // Its Redis call late (a pause, a slow link) until `go`.
        stock: { returnReleased: async (id, us, cap) => (late?.reached(), await late?.go, counters.returnReleased(id, us, cap)) },
      });
    let reached!: () => void;
    const atRedis = new Promise<void>((r) => (reached = r));
    let go!: () => void;
    const first = reservations({ reached, go: new Promise<void>((r) => (go = r)) }).release(v1.outcome.result.orderId);
    await atRedis; // u1's order released in Postgres, its give-back under way
    // u2's release, given back first: it waits for u1's give-back (the stock row lock) at most 300 ms here.
    const second = reservations().release(v2.outcome.result.orderId);
    await Promise.race([second, new Promise((r) => setTimeout(r, 300))]);
    go();
    await Promise.all([first, second]);
    const [pg] = await db.sql`select total - sold as left from item_stock where item_id = ${item}`;
    expect(Number(pg.left)).toBe(2);
    const stockKey = (await redis.keys(`${prefix}*${item}*`)).find((k) => /stock$/.test(k))!;
    const units = (await redis.hvals(stockKey)).reduce((a, v) => a + Number(v), 0);
    expect(units).toBe(2); // before: 1
  });
});
