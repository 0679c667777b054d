import { describe, expect, it } from 'vitest';
import { systemClock } from '../src/kernel/clock.js';
import { itemKeys } from '../src/redis/keys.js';
import { createStockCounters } from '../src/service/stock-counters.js';
import { testRedis } from './support/redis.js';

const { redis, newPrefix } = testRedis();

/**
 * The stock keeper counts in Postgres, then sets Redis's counter while no ticket is admitted. On a
 * busy machine a whole sale fitted between the two (admitted, sold, settled: no ticket admitted
 * again), and the counter was set back to the units before it: Redis offered 30 units that
 * Postgres had reserved (test/e2e-reservations.test.ts, load 10 on 2 cores). The set now carries
 * the admissions counter and the units left read before the count, and changes nothing if either
 * has moved.
 */
describe('setting the stock counter from a Postgres count', () => {
  it('changes nothing if anything was admitted since the count, and sets it if not', async () => {
    const prefix = newPrefix();
    const k = itemKeys(prefix, 'g');
    const counters = createStockCounters({ redis, prefix, clock: systemClock, items: { invalidate() {}, keepActive() {}, peek: () => null, item: async () => null } });
    await redis.hset(k.ctr, { admissions: 7, admitted: 0 });
    await redis.hset(k.stock, { s0: 2 });
    const units = async () => (await redis.hvals(k.stock)).reduce((a, v) => a + Number(v), 0);

    // Counted when 6 had been admitted; a 7th came and went since: the count is old.
    expect(await counters.set('g', 30, 1, { idleOnly: true, unless: { admissions: 6, units: 2 } })).toBe(false);
    expect(await units()).toBe(2);
    // Counted when the counter held 1 unit: one was given back since (a released reservation).
    expect(await counters.set('g', 0, 1, { idleOnly: true, unless: { admissions: 7, units: 1 } })).toBe(false);
    expect(await units()).toBe(2);
    // Counted with nothing moved since: the truth.
    expect(await counters.set('g', 1, 1, { idleOnly: true, unless: { admissions: 7, units: 2 } })).toBe(true);
    expect(await units()).toBe(1);
    // A ticket admitted now: nothing is set whatever the counters read.
    await redis.hset(k.ctr, { admitted: 1 });
    expect(await counters.set('g', 5, 1, { idleOnly: true, unless: { admissions: 7, units: 1 } })).toBe(false);
    expect(await units()).toBe(1);
  });
});
