import { describe, expect, it } from 'vitest';
import { itemKeys } from '../src/redis/keys.js';
import { SERVICE, testApp } from './support/app.js';

/**
 * A unit given back after the operator lowered `shards` (the counter set again with fewer fields)
 * goes to a shard the counter has: into its old one, it sat where no take looks while every sum
 * counted it (the item read `open`, one unit left, and admissions went on against it, each ticket
 * back at the head for want of a unit, for as long as reservations were pending).
 */
const t = await testApp();

describe('a unit given back after the shards were lowered', () => {
  it('lands in a shard the counter has, whether the lease ran out or the sale was refused', async () => {
    const clock = t.manualClock();
    const { call, queue, stock, prefix } = t.build({ clock });
    const item = t.uniqueItem();
    const def = (shards: number) => ({ handler: 'seckill', config: { stock: 3, shards }, gate: { mode: 'manual' } });
    expect((await call('PUT', `/v1/items/${item}`, def(3))).status).toBe(201);
    for (const u of ['a', 'b', 'c']) expect((await call('POST', `/v1/items/${item}/tickets`, { userId: u }, SERVICE)).status).toBe(202);
    // Three tickets admitted, each holding a unit of its own shard (seq % 3: s1, s2, s0).
    const admitted = await queue.admissions.admit(item, 3, 1000);
    expect(admitted).toHaveLength(3);
    const taken = await t.redis.hgetall(itemKeys(prefix, item).taken);
    expect(Object.values(taken).sort()).toEqual(['s0', 's1', 's2']);
    // The operator: one shard from now on (the counter set again: one field).
    expect((await call('PUT', `/v1/items/${item}`, def(1))).status).toBe(200);
    const fields = async () => Object.keys(await t.redis.hgetall(itemKeys(prefix, item).stock)).sort();
    expect(await fields()).toEqual(['s0']);
    // One sale refused by Postgres (its unit refunded), the others' leases run out (the sweep).
    const refused = admitted.find((a) => taken[String(a.seq)] === 's2')!;
    await stock.refund(item, refused.seq);
    clock.advance(2000);
    await queue.admissions.sweep();
    expect(await fields()).toEqual(['s0']);
  });
});
