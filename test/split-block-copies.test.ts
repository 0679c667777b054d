import { describe, expect, it } from 'vitest';
import { createCatalog } from '../src/catalog/catalog.js';
import { createItemsStore } from '../src/db/items-store.js';
import { createStockRows } from '../src/db/stock-rows.js';
import { manualClock } from '../src/kernel/clock.js';
import { createLogger } from '../src/kernel/logger.js';
import { createLine } from '../src/queue/line.js';
import { subLineOf } from '../src/queue/split-line.js';
import { itemKeys, subLineTag } from '../src/redis/keys.js';
import { createGateStore } from '../src/scheduler/gate-store.js';
import { createHandlerRegistry } from '../src/service/registry.js';
import { createStockCounters } from '../src/service/stock-counters.js';
import { testDb } from './support/db.js';
import { testRedis } from './support/redis.js';

/**
 * A split item keeps a user's block bits twice: in the item's hash (joins read it) and on the
 * user's sub-line (its admission reads it there), written by two calls. The check of the
 * operators' writes compared the item's hash alone with Postgres, so a sub-line copy lost (a call
 * cut short, one master rolled back) stayed lost and a blocked user's waiting ticket was admitted,
 * and a stale copy left there refused an unblocked user's next ticket (a review).
 */
const { redis, newPrefix } = testRedis();
const own = await testDb();

describe("a split item's copies of its blocks", () => {
  it('are put back as Postgres has them by the check of the operators\' writes: lost, or left behind', async () => {
    const p = newPrefix();
    const clock = manualClock();
    const queue = createLine({ redis, prefix: p, clock, cacheMs: 0 });
    const catalog = createCatalog({ queue, store: createItemsStore(own.db), stockRows: createStockRows(own.sql), counters: createStockCounters({ redis, prefix: p, clock, items: queue.items }), gates: createGateStore(redis, p, clock), handlers: createHandlerRegistry(), clock, log: createLogger('silent'), autoCap: 10 });
    await catalog.put('blk4', { handler: 'external', lines: 4, gate: { mode: 'manual', rate: 1000 } }, { role: 'operator', key: 'k' });
    const onSubLine = (from: number) => {
      let u = `u${from}`;
      for (let i = from; subLineOf(u, 4) === 0; i++) u = `u${i}`;
      return u;
    };
    const blocked = onSubLine(0);
    const freed = onSubLine(Number(blocked.slice(1)) + 1);
    const copy = (u: string) => itemKeys(p, subLineTag('blk4', subLineOf(u, 4))).blocked;
    const joined = await queue.tickets.join('blk4', blocked, null);
    // Blocked as the operator's write makes it (Postgres, then both copies); then its sub-line copy lost.
    await catalog.keepBlock('blk4', blocked, true);
    await queue.definitions.blocks.set('blk4', blocked, 'item', true);
    await redis.hdel(copy(blocked), blocked);
    // And another user's block left behind on their sub-line alone (unblocked in Postgres and the item's hash).
    await redis.hset(copy(freed), freed, '1');
    expect(await catalog.reapply('blk4')).toBe(true);
    expect(await redis.hget(copy(blocked), blocked)).toBe('1');
    expect(await redis.hget(copy(freed), freed)).toBeNull();
    // The blocked user's waiting ticket is not handed out (before: admitted).
    const got = await queue.admissions.admit('blk4', 10, 30_000);
    expect(got.map((t) => t.ticketId)).not.toContain(joined.ticket.ticketId);
    expect((await queue.tickets.join('blk4', freed, null)).ticket.state).toBe('waiting');
  });
});
