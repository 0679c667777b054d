import { randomBytes } from 'node:crypto';
import { loadConfig } from '../../src/config.js';
import { wireApp, wireModules } from '../../src/daemon.js';
import { manualClock, systemClock, type Clock } from '../../src/kernel/clock.js';
import { createLogger } from '../../src/kernel/logger.js';
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

  function build(opts: { clock?: Clock; prefix?: string; cacheMs?: number; corsOrigins?: string[] | '*'; scopes?: string; defaultKeyQuota?: number; admitHold?: () => Promise<unknown> | null; reconnects?: () => number } = {}) {
    const clock = opts.clock ?? systemClock;
    const prefix = opts.prefix ?? newPrefix();
    // The daemon's own wiring (daemon.ts) without its loops: nothing admits unless a test does.
    const config = loadConfig({
      FLOODGATE_REDIS_PREFIX: prefix,
      FLOODGATE_CACHE_MS: String(opts.cacheMs ?? 0),
      FLOODGATE_DEFAULT_KEY_QUOTA: opts.defaultKeyQuota?.toString(),
      FLOODGATE_SERVICE_KEYS: [SERVICE, 'svc-key-2', 'app:app-key', 'shop:shop-key'].join(','),
      FLOODGATE_OPERATOR_KEYS: OPERATOR,
      FLOODGATE_KEY_SCOPES: opts.scopes,
      FLOODGATE_CORS_ORIGINS: opts.corsOrigins === undefined ? undefined : opts.corsOrigins === '*' ? '*' : opts.corsOrigins.join(','),
      FLOODGATE_AUTO_START_LIMIT: '256',
    });
    const stores = { redis, dbHandle: dbh };
    const modules = wireModules(config, log, clock, stores);
    const { queue, stock, gateStore: gates, catalog, metrics, store, lostTickets, stockRows, handlers, pgPressure, series } = modules;
    const app = wireApp(config, log, stores, modules, { admitHold: opts.admitHold, reconnects: opts.reconnects });
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
    return { app, queue, stock, gates, catalog, clock, prefix, metrics, call, store, lostTickets, stockRows, handlers, pgPressure, series };
  }

  return { build, redis, db: dbh, manualClock, uniqueItem: () => `item-${randomBytes(4).toString('hex')}` };
}
