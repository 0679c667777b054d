import { afterAll, describe, expect, it } from 'vitest';
import { startDaemonProcess } from './support/daemon.js';
import { testDb } from './support/db.js';
import { http, OUTAGE_ANSWER_MS } from './support/http.js';
import { ownCluster } from './support/redis-cluster.js';

/**
 * The whole cluster gone (every master killed, no replica to promote): the daemon must tell its
 * callers so at once, as it does for one Redis (test/outage-redis.test.ts), and not hold their
 * requests while its cluster connection retries. (A daemon process, killed at the end: a graceful
 * stop with no Redis left is bounded — BullMQ's workers are given 10 s — but their fetch loops
 * keep retrying until the process exits.)
 */
const cluster = await ownCluster({ masters: 3 });
const db = await testDb();
const daemon = await startDaemonProcess({ DATABASE_URL: db.url, FLOODGATE_REDIS_CLUSTER: cluster.seeds, FLOODGATE_REDIS_PREFIX: 'fgo:', FLOODGATE_SERVICE_KEYS: 'svc', FLOODGATE_OPERATOR_KEYS: 'op' });
afterAll(() => daemon.stop('SIGKILL'));
const SVC = 'svc';
const call = (method: string, path: string, body?: unknown, key: string | null = 'op') => http(daemon.url, method, path, body, key);

async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; res: T }> {
  const t0 = performance.now();
  const res = await fn();
  return { ms: performance.now() - t0, res };
}

describe('a Redis Cluster that is gone entirely', () => {
  it('answers 503 at once (within about a second, the command timeout) to joins, polls and readiness', { timeout: 60_000 }, async () => {
    expect((await call('PUT', '/v1/items/gone', { handler: 'external' })).status).toBe(201);
    const joined = await call('POST', '/v1/items/gone/tickets', { userId: 'u-before' }, SVC);
    expect(joined.status).toBe(202);

    await Promise.all(cluster.nodes.map((n) => n.kill()));
    // Past the item cache's 250 ms.
    await new Promise((r) => setTimeout(r, 1000));
    for (const req of [
      () => call('POST', '/v1/items/gone/tickets', { userId: 'u-down' }, SVC),
      () => call('GET', `/v1/tickets/${joined.body.ticketId}`, undefined, null),
      () => call('GET', '/readyz', undefined, null),
    ]) {
      const { ms, res } = await timed(req);
      expect(res.status).toBe(503);
      expect(ms).toBeLessThan(OUTAGE_ANSWER_MS);
    }
  });
});
