import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { inProcessDaemon, recordingLogger, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { ownRedis } from './support/redis-server.js';

/**
 * A Redis set to evict keys (maxmemory-policy other than noeviction) drops a line's keys at its
 * memory limit without a word: a review saw a user's second ticket and a webhook's second order
 * (the users hash gone), an operator's 2/s cap read as the default auto gate (the gate hash gone),
 * and a sale that never resumed (the stock counter or the tickets gone), while the daemon started
 * and /readyz read 200 throughout. A start refuses such a Redis; one set so while the daemon runs
 * fails /readyz, is counted in a gauge, and is logged.
 */
const db = await testDb();
const redis = await ownRedis();
const direct = new Redis(redis.url);
afterAll(() => direct.disconnect());

describe('a Redis set to evict keys', () => {
  it('is refused at the start, naming the setting', async () => {
    await direct.config('SET', 'maxmemory-policy', 'allkeys-lru');
    try {
      await expect(inProcessDaemon({ prefix: 'fg:', databaseUrl: db.url, env: { REDIS_URL: redis.url } })).rejects.toThrow(/maxmemory-policy is allkeys-lru.*noeviction/);
    } finally {
      await direct.config('SET', 'maxmemory-policy', 'noeviction');
    }
  });

  it('set so while the daemon runs: /readyz fails and says why, the gauge reads 1, the log says it; set back, ready again', { timeout: 30_000 }, async () => {
    const logged = recordingLogger('warn');
    const { call } = await inProcessDaemon({ prefix: 'fg:', databaseUrl: db.url, log: logged.log, env: { REDIS_URL: redis.url } });
    expect((await call('GET', '/readyz', undefined, null)).status).toBe(200);
    const gauge = () => call('GET', '/metrics', undefined, null).then((r) => Number(/^floodgate_redis_evicting (\d)/m.exec(r.body as string)?.[1]));
    expect(await gauge()).toBe(0);
    await direct.config('SET', 'maxmemory-policy', 'volatile-lru');
    // Read once a second with the memory check.
    const notReady = await waitFor(() => call('GET', '/readyz', undefined, null), (r) => r.status === 503, 10_000);
    expect(notReady.body).toMatchObject({ status: 'unavailable', checks: { redis: 'fail', postgres: 'ok' } });
    expect(notReady.body.error.message).toMatch(/maxmemory-policy is volatile-lru/);
    expect(await gauge()).toBe(1);
    expect(logged.lines()).toMatch(/maxmemory-policy is volatile-lru/);
    await direct.config('SET', 'maxmemory-policy', 'noeviction');
    expect((await waitFor(() => call('GET', '/readyz', undefined, null), (r) => r.status === 200, 10_000)).status).toBe(200);
    expect(await gauge()).toBe(0);
  });
});
