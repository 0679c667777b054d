import { describe, expect, it } from 'vitest';
import { manualClock } from '../src/kernel/clock.js';
import { createLine } from '../src/queue/line.js';
import type { LineDefinition } from '../src/queue/types.js';
import { rollbackItem, snapshotItem, testRedis } from './support/redis.js';

/** What a waiting user is told of their place, read through two daemons (each with its own item views). */
const t = testRedis();
const def = (itemId: string): LineDefinition => ({ itemId, handler: 'external', config: {}, capacity: null, abandonAfterMs: null, opensAt: null, closesAt: null, rejoin: 'any' });

/** Two daemons' lines over one Redis: `a` answers the polls, `b` takes the cancels and admits. */
function twoDaemons() {
  const clock = manualClock();
  const prefix = t.newPrefix();
  return { clock, prefix, a: createLine({ redis: t.redis, prefix, clock, cacheMs: 250 }), b: createLine({ redis: t.redis, prefix, clock, cacheMs: 250 }) };
}

describe('places told through another daemon', () => {
  it('after a rollback that took back a cancel alone: neither daemon counts the cancel, and the next cancel is read', async () => {
    const { clock, prefix, a, b } = twoDaemons();
    await a.definitions.define(def('cx'), { mode: 'closed', rate: null, maxInFlight: null }, { reopen: false });
    const ids: string[] = [];
    for (let i = 1; i <= 5; i++) ids.push((await a.tickets.join('cx', `u${i}`, null)).ticket.ticketId);
    const snap = await snapshotItem(t.redis, prefix, 'cx');
    expect((await b.tickets.cancel(ids[1])).state).toBe('cancelled');
    clock.advance(300);
    expect((await a.tickets.status(ids[4])).position).toBe(4);
    // Redis rolls back past the cancel (an AOF's last second, a failover): ticket 2 waits again.
    await rollbackItem(t.redis, prefix, 'cx', snap);
    clock.advance(300);
    expect([(await a.tickets.status(ids[4])).position, (await b.tickets.status(ids[4])).position]).toEqual([5, 5]);
    // The user of ticket 3 leaves through B: A says so (the cancel count was back where A had seen it).
    expect((await b.tickets.cancel(ids[2])).state).toBe('cancelled');
    clock.advance(300);
    expect((await a.tickets.status(ids[2])).state).toBe('cancelled');
    expect((await a.tickets.status(ids[4])).position).toBe(4);
  });

  it('never rises from a poll read from Redis to the next one answered from the view', async () => {
    const { clock, a, b } = twoDaemons();
    await a.definitions.define(def('k'), { mode: 'manual', rate: 1000, maxInFlight: null }, { reopen: false });
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) ids.push((await b.tickets.join('k', `u${i}`, null)).ticket.ticketId);
    await a.tickets.status(ids[0]); // A's view: nobody admitted yet
    clock.advance(100);
    await b.admissions.admit('k', 10, 60_000);
    // A user who joined through B polls A for the first time: A reads the ticket from Redis.
    const first = await a.tickets.status(ids[15]);
    const second = await a.tickets.status(ids[15]);
    expect(second.position).toBeLessThanOrEqual(first.position!);
  });
});
