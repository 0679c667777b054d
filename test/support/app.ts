import { randomBytes } from 'node:crypto';
import { parseKeyScopes } from '../../src/access/keys.js';
import { createApp } from '../../src/api/app.js';
import { createCatalog } from '../../src/catalog/catalog.js';
import { createItemsStore } from '../../src/db/items-store.js';
import { createStockLedger } from '../../src/db/stock-rows.js';
import { manualClock, systemClock, type Clock } from '../../src/kernel/clock.js';
import { createLogger } from '../../src/kernel/logger.js';
import { createMetrics } from '../../src/kernel/metrics.js';
import { createGateStore } from '../../src/scheduler/gate-store.js';
import { createQueue } from '../../src/queue/queue.js';
import { withScripts } from '../../src/redis/scripts.js';
import { createHandlerRegistry } from '../../src/service/registry.js';
import { createReservations } from '../../src/service/reservations.js';
import { testDb } from './db.js';
import { testRedis } from './redis.js';

export const OPERATOR = 'op-key-test';
export const SERVICE = 'svc-key-test';

/**
 * The whole API in-process (app.request, no port) over real Redis and Postgres, with a key
 * prefix per call and a database per test file. Call at the top level of a test file.
 */
export async function testApp() {
  const { redis, newPrefix } = testRedis();
  const dbh = await testDb();
  const log = createLogger('silent');

  function build(opts: { clock?: Clock; prefix?: string; cacheMs?: number; corsOrigins?: string[] | '*'; scopes?: string; defaultKeyQuota?: number } = {}) {
    const clock = opts.clock ?? systemClock;
    const prefix = opts.prefix ?? newPrefix();
    const queue = createQueue({ redis, prefix, clock, cacheMs: opts.cacheMs ?? 0, defaultKeyQuota: opts.defaultKeyQuota });
    const handlers = createHandlerRegistry();
    const metrics = createMetrics();
    const gateStore = createGateStore(withScripts(redis), prefix);
    const catalog = createCatalog({
      queue,
      store: createItemsStore(dbh.db),
      stock: createStockLedger(dbh.sql),
      handlers,
      clock,
      log,
      resetController: (itemId) => gateStore.requestReset(itemId),
      autoCap: 256,
    });
    const app = createApp({
      queue,
      catalog,
      handlers,
      metrics,
      log,
      keys: { service: [SERVICE, 'svc-key-2', 'app:app-key', 'shop:shop-key'], operator: [OPERATOR] },
      scopes: parseKeyScopes(opts.scopes),
      bodyLimitBytes: 16 * 1024,
      reservations: createReservations({ sql: dbh.sql, queue, log, onReturned: () => {} }),
      ready: async () => ({ redis: true, postgres: true }),
      beforeScrape: async () => {},
      corsOrigins: opts.corsOrigins,
    });
    const call = async (method: string, path: string, body?: unknown, key?: string | null, headers: Record<string, string> = {}) => {
      const h: Record<string, string> = { ...headers };
      if (key !== null) h.authorization = `Bearer ${key ?? OPERATOR}`;
      let payload: string | undefined;
      if (body !== undefined) {
        payload = typeof body === 'string' ? body : JSON.stringify(body);
        h['content-type'] ??= 'application/json';
      }
      const res = await app.request(path, { method, headers: h, body: payload });
      const text = await res.text();
      let json: any = null;
      try {
        json = text ? JSON.parse(text) : null;
      } catch {
        json = text;
      }
      return { status: res.status, body: json, headers: res.headers };
    };
    return { app, queue, catalog, clock, prefix, metrics, call };
  }

  return { build, redis, db: dbh, manualClock, uniqueItem: () => `item-${randomBytes(4).toString('hex')}` };
}
