import { describe, expect, it } from 'vitest';
import { createPgPressure, defaultPressure, nextCap } from '../src/scheduler/pg-pressure.js';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { tcpProxy } from './support/proxy.js';
import { testRedis } from './support/redis.js';

const { newPrefix } = testRedis();
const db = await testDb();
const pgUrl = new URL(db.url);
const proxy = await tcpProxy({ host: pgUrl.hostname, port: Number(pgUrl.port || 5432) });
const viaProxy = new URL(db.url);
viaProxy.port = String(proxy.port);
const { call } = await inProcessDaemon({ prefix: newPrefix(), databaseUrl: viaProxy.toString() });

describe('Postgres pressure, the gate signal of seckill and coupon', () => {
  it('caps in-flight at what Postgres sells in the target time, never under one batch, never over the handler cap', () => {
    expect(nextCap(null, 1000)).toBe(1000);
    expect(nextCap(5000, 1000)).toBe(1000); // fast: 5000 sells/s × 5 s
    expect(nextCap(150, 1000)).toBe(750);
    expect(nextCap(10, 1000)).toBe(defaultPressure.minCap);
  });

  it('leaves the cap alone while sells are fast, and remembers the best rate of the last 30 s once they are slow', () => {
    let now = 0;
    const p = createPgPressure({ now: () => now });
    for (; now < 3000; now += 10) p.record(40); // 100 sells/s, 40 ms each
    expect(p.cap(1000)).toBe(1000);
    for (; now < 6000; now += 20) p.record(4000); // 50 sells/s, 4 s each: slow
    expect(p.cap(1000)).toBe(500); // the best rate (100/s) × 5 s
    for (; now < 40_000; now += 100) p.record(4000); // 10/s for 34 s: the 100/s is forgotten
    expect(p.cap(1000)).toBe(defaultPressure.minCap);
  });

  it('slows admissions when Postgres slows down, instead of failing tickets: fewer admitted, none failed, the sale completes', { timeout: 120_000 }, async () => {
    // More units than the handler's cap, so the stock does not bound the tickets admitted.
    const stock = 4000;
    const users = 3000;
    await call('PUT', '/v1/items/slow', { handler: 'seckill', config: { stock }, gate: { mode: 'closed' } });
    for (let i = 0; i < users; i += 100) await Promise.all(Array.from({ length: 100 }, (_, j) => call('POST', '/v1/items/slow/tickets', { userId: `u${i + j}` }, SVC)));
    // Every chunk held 700 ms each way: a sale transaction of a few round trips takes ~6 s, so
    // Postgres sells fewer than 1000 (the handler's cap) in the 5 s target.
    proxy.delay(700);
    await call('PATCH', '/v1/items/slow/gate', { mode: 'auto' });
    // Before any sell has answered, the handler's cap (1000) admits; once sells are seen to be slow,
    // the cap follows what Postgres sells in the target time.
    const seen: number[] = [];
    const item = await waitFor(
      () =>
        call('GET', '/v1/items/slow').then((r) => {
          if (r.body.counts.succeeded > 0) seen.push(r.body.counts.admitted);
          return r.body;
        }),
      (v) => v.counts.waiting === 0 && v.counts.admitted === 0,
      100_000,
    );
    expect(item.counts).toMatchObject({ succeeded: users, failed: 0, waiting: 0, admitted: 0 });
    // After the first sells answered, the daemon held fewer than the handler's 1000 admitted.
    const later = seen.slice(Math.floor(seen.length / 3));
    expect(Math.max(...later)).toBeLessThan(1000);
    const orders = await db.sql`select count(*)::int as n from orders where item_id = 'slow'`;
    expect(orders[0].n).toBe(users);
  });
});
