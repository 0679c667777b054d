import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { createApp } from '../src/api/app.js';
import { createGateStore } from '../src/scheduler/gate-store.js';
import { createSeriesStore } from '../src/scheduler/series-store.js';
import { createInviteUses } from '../src/access/invite-uses.js';
import { createInviteUseRows } from '../src/db/invite-uses.js';
import { createStockCounters } from '../src/service/stock-counters.js';
import { createCatalog } from '../src/catalog/catalog.js';
import { connectDb } from '../src/db/client.js';
import { createItemsStore } from '../src/db/items-store.js';
import { createStockRows } from '../src/db/stock-rows.js';
import { systemClock } from '../src/kernel/clock.js';
import { createLogger } from '../src/kernel/logger.js';
import { createMetrics } from '../src/kernel/metrics.js';
import { createLine } from '../src/queue/line.js';
import { createHandlerRegistry } from '../src/service/registry.js';

// Nothing listens on port 1: every Redis and Postgres call fails to connect.
const redis = new Redis('redis://127.0.0.1:1', { maxRetriesPerRequest: 1, retryStrategy: () => 50, lazyConnect: true });
redis.on('error', () => {});
const db = connectDb('postgres://postgres@127.0.0.1:1/none', { max: 1 });
afterAll(async () => {
  redis.disconnect();
  await db.close();
});

describe('when Redis and Postgres are unreachable', () => {
  it('answers 503 unavailable with Retry-After, never a 500', async () => {
    const log = createLogger('silent');
    const queue = createLine({ redis, prefix: 'x:', clock: systemClock, cacheMs: 0 });
    const handlers = createHandlerRegistry();
    const catalog = createCatalog({ queue, store: createItemsStore(db.db), stockRows: createStockRows(db.sql), counters: createStockCounters({ redis, prefix: 'x:', clock: systemClock, items: queue.items }), gates: createGateStore(redis, 'x:', systemClock), handlers, clock: systemClock, log, autoCap: 10 });
    const app = createApp({
      series: createSeriesStore(redis, 'x:', systemClock),
      inviteUses: createInviteUses(redis, 'x:', createInviteUseRows(db.sql)),
      queue, catalog, handlers, metrics: createMetrics(), log,
      keys: { service: ['s'], operator: ['o'] },
      bodyLimitBytes: 16384,
      ready: async () => ({ redis: false, postgres: false }),
      itemViews: async () => [],
    });
    const req = (method: string, path: string, body?: unknown) =>
      app.request(path, { method, headers: { authorization: 'Bearer o', 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
    for (const [method, path, body] of [
      ['GET', '/v1/items/a'],
      ['PUT', '/v1/items/a', { handler: 'external' }],
      ['POST', '/v1/items/a/tickets', { userId: 'u' }],
      ['GET', '/v1/tickets/YQ.1.AAAAAAAAAAAAAAAAAAAAAA'],
    ] as const) {
      const res = await req(method, path, body);
      expect(res.status, `${method} ${path}`).toBe(503);
      expect((await res.json()).error.code).toBe('unavailable');
      expect(res.headers.get('retry-after')).toBeTruthy();
    }
    // The waiting page of a ticket: an HTML 503 that asks again by itself (a user who reloaded it
    // during an outage was left on a page with no script, that never came back).
    const wait = await app.request('/wait/YQ.1.AAAAAAAAAAAAAAAAAAAAAA');
    expect(wait.status).toBe(503);
    expect(await wait.text()).toMatch(/<meta http-equiv="refresh" content="(2\d|3\d|40)">/);
    const ready = await app.request('/readyz');
    expect(ready.status).toBe(503);
    expect(await ready.json()).toMatchObject({ checks: { redis: 'fail', postgres: 'fail' } });
  });
});
