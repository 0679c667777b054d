import type { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { systemClock } from '../src/kernel/clock.js';
import { createLine } from '../src/queue/line.js';
import { itemKeys } from '../src/redis/keys.js';
import { testRedis } from './support/redis.js';

/**
 * A fresh read of an item (what an operator's change answers with, items.item(id, { fresh })) is
 * a read begun after the call: one already in flight when this process wrote the item (a
 * dispatcher round's, a poll's, its answer late on a busy connection) showed the item as before
 * the write — a gate just closed answered as open, and that view kept as fresh for the cache time.
 */
const t = testRedis();

/** The connection, with the item reads' answers held back while `hold` is set (Redis ran them at once). */
function slowReads(redis: Redis) {
  const state = { hold: false };
  const proxied = new Proxy(redis, {
    get(target, prop, recv) {
      if (prop === 'snapshot' || prop === 'snapshotMany') {
        const real = (target as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>)[prop].bind(target);
        return (...a: unknown[]) => {
          const got = real(...a);
          return state.hold ? got.then((r) => new Promise((res) => setTimeout(() => res(r), 200))) : got;
        };
      }
      const v = Reflect.get(target, prop, recv);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
  return { redis: proxied, state };
}

describe('a fresh read of an item', () => {
  it('never answers a read begun before this process invalidated it, nor keeps that read as fresh', async () => {
    const prefix = t.newPrefix();
    const slow = slowReads(t.redis);
    const line = createLine({ redis: slow.redis, prefix, clock: systemClock, cacheMs: 5_000 });
    await line.definitions.define({ itemId: 'f1', handler: 'external', config: {}, capacity: null, abandonAfterMs: null, opensAt: null, closesAt: null, rejoin: 'any' }, { mode: 'manual', rate: null, maxInFlight: null }, { reopen: false });
    expect((await line.items.item('f1', { fresh: true }))?.snap.gate.mode).toBe('manual');

    // A read under way (its answer late), then this process's write, then its fresh read.
    slow.state.hold = true;
    const early = line.items.item('f1', { fresh: true });
    await new Promise((r) => setTimeout(r, 20));
    slow.state.hold = false;
    await t.redis.hset(itemKeys(prefix, 'f1').gate, 'mode', 'closed');
    const fresh = await line.items.item('f1', { fresh: true });
    expect(fresh?.snap.gate.mode).toBe('closed');
    // The early read still answers its own caller, as it was; the cache holds the new view.
    expect((await early)?.snap.gate.mode).toBe('manual');
    expect((await line.items.item('f1'))?.snap.gate.mode).toBe('closed');
  });
});
