import { describe, expect, it } from 'vitest';
import { BUSY_EVERY_MS, stockKeeperRound } from '../src/catalog/stock-keeper.js';
import { createLogger } from '../src/kernel/logger.js';
import { itemKeys } from '../src/redis/keys.js';
import { SERVICE, testApp } from './support/app.js';

const t = await testApp();

describe('the stock keeper (catalog/stock-keeper.ts)', () => {
  it('reconciles an item once its view has rested for a round, not while it moves (but every 30 s if it never rests), and puts a rolled-back counter right', async () => {
    const { call, queue, catalog, prefix } = t.build();
    const itemId = t.uniqueItem();
    expect((await call('PUT', `/v1/items/${itemId}`, { handler: 'seckill', config: { stock: 10 } })).status).toBe(201);
    await queue.items.activateAll();
    const asked: string[] = [];
    const counting = { reconcile: (opts: { itemId?: string; idleOnly?: boolean }) => (asked.push(opts.itemId!), catalog.reconcile(opts)) };
    let now = 0;
    const round = stockKeeperRound({ queue, catalog: counting, pg: { up: true }, log: createLogger('silent'), now: () => now });
    let users = 0;
    /** The round, 2 s after the last, after a join (the item's view moves) or not. */
    const nextRound = async (join: boolean) => {
      if (join) expect((await call('POST', `/v1/items/${itemId}/tickets`, { userId: `u${users++}` }, SERVICE)).status).toBe(202);
      await queue.items.item(itemId, { fresh: true });
      now += 2000;
      await round();
    };
    const mine = () => asked.filter((id) => id === itemId).length;

    // Moving: no reconcile; resting a round: one; still resting: none more.
    for (let i = 0; i < 5; i++) await nextRound(true);
    expect(mine()).toBe(0);
    await nextRound(false);
    expect(mine()).toBe(1);
    await nextRound(false);
    await nextRound(false);
    expect(mine()).toBe(1);

    // Never resting: once per BUSY_EVERY_MS (timed from the first round that saw it moving: a
    // reconcile 30 s on, the next 30 s after the round that follows it).
    for (let i = 0; i < (2 * BUSY_EVERY_MS) / 2000 + 2; i++) await nextRound(true);
    expect(mine()).toBe(3);

    // A counter rolled back to an older, higher value is brought down once the item rests.
    await nextRound(false);
    const stock = itemKeys(prefix, itemId).stock;
    const shard = (await t.redis.hkeys(stock))[0];
    await t.redis.hset(stock, shard, 25);
    await nextRound(false);
    await nextRound(false);
    expect(Number(await t.redis.hget(stock, shard))).toBe(10);
  });
  it('after a start or a reconnect (every item due at once) reads what Postgres leaves them in one query and reconciles only the counters that differ', async () => {
    const { call, queue, catalog, prefix, stockRows } = t.build();
    const ids = [t.uniqueItem(), t.uniqueItem(), t.uniqueItem()];
    for (const id of ids) expect((await call('PUT', `/v1/items/${id}`, { handler: 'seckill', config: { stock: 10 } })).status).toBe(201);
    await queue.items.activateAll();
    const asked: string[] = [];
    const counting = { reconcile: (opts: { itemId?: string; idleOnly?: boolean }) => (asked.push(opts.itemId!), catalog.reconcile(opts)) };
    const reads: string[][] = [];
    const left = (itemIds: string[]) => (reads.push(itemIds), stockRows.left(itemIds));
    let now = 0;
    const round = stockKeeperRound({ queue, catalog: counting, pg: { up: true }, log: createLogger('silent'), now: () => now, left });
    const nextRound = async () => {
      for (const id of ids) await queue.items.item(id, { fresh: true });
      now += 2000;
      await round();
    };
    const mine = () => asked.filter((id) => ids.includes(id));
    // First seen, then rested: all three due in one round, one read, no reconcile (their counters hold 10).
    await nextRound();
    await nextRound();
    expect(reads.filter((r) => r.some((id) => ids.includes(id)))).toHaveLength(1);
    expect(mine()).toEqual([]);
    await nextRound();
    expect(mine()).toEqual([]);
    // A counter rolled back to an older, higher value: that item, and only it, is reconciled once it rests.
    const stock = itemKeys(prefix, ids[1]).stock;
    const shard = (await t.redis.hkeys(stock))[0];
    await t.redis.hset(stock, shard, 25);
    await nextRound();
    await nextRound();
    expect(mine()).toEqual([ids[1]]);
    expect(Number(await t.redis.hget(stock, shard))).toBe(10);
  });
});
