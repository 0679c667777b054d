import { describe, expect, it } from 'vitest';
import { manualClock } from '../src/kernel/clock.js';
import { itemKeys } from '../src/redis/keys.js';
import { createGateStore } from '../src/scheduler/gate-store.js';
import { testRedis } from './support/redis.js';

/**
 * What the gate's controller publishes is written only while its writer holds the item's lease: a
 * leader whose tick stalled past the lease (the lease taken by another daemon meanwhile) wrote its
 * stale limit and pace once over the new leader's.
 */
const t = testRedis();

describe("the controller's publish", () => {
  it('is written by the holder of the lease only', async () => {
    const prefix = t.newPrefix();
    const store = createGateStore(t.redis, prefix, manualClock());
    expect(await store.lead('g1', 'daemon-a', 2000)).toBe(true);
    expect(await store.publishAsLeader('g1', 'daemon-a', { aLimit: 40, aLeader: 'daemon-a' })).toBe(true);
    // A stalls; its lease runs out and B takes it, publishing its own limit.
    await t.redis.del(itemKeys(prefix, 'g1').leader);
    expect(await store.lead('g1', 'daemon-b', 2000)).toBe(true);
    expect(await store.publishAsLeader('g1', 'daemon-b', { aLimit: 8, aLeader: 'daemon-b' })).toBe(true);
    // A's stalled tick goes on to its publish: refused.
    expect(await store.publishAsLeader('g1', 'daemon-a', { aLimit: 40, aLeader: 'daemon-a' })).toBe(false);
    expect(await t.redis.hmget(itemKeys(prefix, 'g1').gate, 'aLimit', 'aLeader')).toEqual(['8', 'daemon-b']);
  });
});
