import { describe, expect, it } from 'vitest';
import { createCatalog } from '../src/catalog/catalog.js';
import { createItemsStore } from '../src/db/items-store.js';
import { createStockRows } from '../src/db/stock-rows.js';
import { manualClock } from '../src/kernel/clock.js';
import { createLogger } from '../src/kernel/logger.js';
import { createLine } from '../src/queue/line.js';
import { createLineScripts, cutArgs } from '../src/queue/line-scripts.js';
import { createScriptRunner } from '../src/redis/scripts.js';
import { createGateStore } from '../src/scheduler/gate-store.js';
import { createHandlerRegistry } from '../src/service/registry.js';
import { createStockCounters } from '../src/service/stock-counters.js';
import { testDb } from './support/db.js';
import { testRedis } from './support/redis.js';

/**
 * An item split into sub-lines is closed one sub-line at a time (one cut script each). A close cut
 * short after the item's own sub-line (a Redis error, a daemon stopped mid-way) left the item's
 * flag set, so the check of the operators' writes took it as closed and cut nothing more, and the
 * other sub-lines' waiting tickets were admitted after the close — and never ended (a review).
 */
const { redis, newPrefix } = testRedis();
const own = await testDb();

describe('a split item whose close was cut short', () => {
  it('admits nobody, and the check of the operators\' writes ends every ticket still waiting', async () => {
    const p = newPrefix();
    const clock = manualClock();
    const queue = createLine({ redis, prefix: p, clock, cacheMs: 0 });
    const store = createItemsStore(own.db);
    const catalog = createCatalog({ queue, store, stockRows: createStockRows(own.sql), counters: createStockCounters({ redis, prefix: p, clock, items: queue.items }), gates: createGateStore(redis, p, clock), handlers: createHandlerRegistry(), clock, log: createLogger('silent'), autoCap: 10 });
    await catalog.put('cut4', { handler: 'external', lines: 4, gate: { mode: 'manual', rate: 1000 } }, { role: 'operator', key: 'k' });
    for (let i = 0; i < 12; i++) await queue.tickets.join('cut4', `u${i}`, null);
    // The close as catalog.close makes it — Postgres first — with its cut stopped after the item's own sub-line.
    await store.markClosed('cut4', new Date(clock.now()));
    await createLineScripts(createScriptRunner(redis, p).run).cut('cut4', clock.now(), cutArgs('closed'), []);
    queue.items.invalidate('cut4');
    const half = await queue.items.item('cut4', { fresh: true });
    expect(half!.snap.closed).toBe(true);
    expect(half!.snap.counts.waiting).toBeGreaterThan(0);
    // Before: the other sub-lines' tickets were handed out.
    expect(await queue.admissions.admit('cut4', 50, 30_000)).toEqual([]);
    expect(await catalog.reapply('cut4')).toBe(true);
    const after = await queue.items.item('cut4', { fresh: true });
    expect(after!.snap.counts).toMatchObject({ waiting: 0, admitted: 0, cancelled: 12 });
  });
});
