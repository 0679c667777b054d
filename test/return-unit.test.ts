import { describe, expect, it } from 'vitest';
import { manualClock } from '../src/kernel/clock.js';
import { createLine } from '../src/queue/line.js';
import { itemKeys } from '../src/redis/keys.js';
import { createScriptRunner, scripts } from '../src/redis/scripts.js';
import { testRedis } from './support/redis.js';

/**
 * A released reservation's unit goes back, and its buyer may join again: return-unit-3.lua clears
 * the user's entry when it names the order's succeeded ticket. It cleared it for any succeeded
 * ticket: after a Redis rollback lost a buyer's entry, their later ticket could succeed with an
 * order of its own before the old order's release came back — freed, that user's next join made a
 * ticket Postgres then refused (`already_purchased`) instead of answering the one they hold (a review).
 */
const { redis, newPrefix } = testRedis();

describe("a released order's unit given back", () => {
  it("frees its buyer only from the ticket that holds that order", async () => {
    const prefix = newPrefix();
    const clock = manualClock();
    const line = createLine({ redis, prefix, clock, cacheMs: 0 });
    await line.definitions.define({ itemId: 'ru', handler: 'external', config: {}, capacity: null, abandonAfterMs: null, opensAt: null, closesAt: null, rejoin: 'unless_succeeded' }, { mode: 'manual', rate: null, maxInFlight: null }, { reopen: false });
    await line.tickets.join('ru', 'u1', null);
    const [t] = await line.admissions.admit('ru', 1, 60_000);
    expect(await line.admissions.settleMany('ru', [{ seq: t!.seq, leaseId: t!.leaseId, status: 'succeeded', result: { orderId: '9' } }])).toEqual([1]);
    const users = itemKeys(prefix, 'ru').users;
    const run = createScriptRunner(redis, prefix).run;
    // Order 7, released: not this ticket's (it succeeded with order 9).
    await run(scripts.returnUnit, 'ru', clock.now(), { cap: '' }, ['7', 'u1']);
    expect(await redis.hget(users, 'u1')).toBe(String(t!.seq)); // before: cleared
    // Order 9, its own: the user may join again.
    await run(scripts.returnUnit, 'ru', clock.now(), { cap: '' }, ['9', 'u1']);
    expect(await redis.hget(users, 'u1')).toBeNull();
  });
});
