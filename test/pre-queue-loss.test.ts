import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { ownRedis } from './support/redis-server.js';

/**
 * A pre-queue's seed is its commitment: `seedHash` is shown from the definition on, the seed at the
 * draw, and users check their places against it. Redis that loses the item (a flush, a restart
 * without AOF) must not change it: the daemon makes the item again from Postgres, and the seed it
 * draws with is the one whose hash was shown (it drew a new random one: another seedHash before
 * the draw, another revealed seed after it).
 */
const redisServer = await ownRedis();
const db = await testDb();

describe("a pre-queue's seed when Redis loses the item", () => {
  it('is the same after the daemon makes the item again, before the draw and after it', { timeout: 60_000 }, async () => {
    const { call } = await inProcessDaemon({ prefix: `fgq:${randomBytes(4).toString('hex')}:`, databaseUrl: db.url, env: { REDIS_URL: redisServer.url } });
    const opensLater = new Date(Date.now() + 10 * 60_000).toISOString();
    const opensSoon = new Date(Date.now() + 1500).toISOString();
    const later = await call('PUT', '/v1/items/later', { handler: 'external', opensAt: opensLater, preQueue: { fromMs: 60 * 60_000 }, gate: { mode: 'manual' } });
    const soon = await call('PUT', '/v1/items/soon', { handler: 'external', opensAt: opensSoon, preQueue: { fromMs: 60 * 60_000 }, gate: { mode: 'manual' } });
    expect([later.status, soon.status]).toEqual([201, 201]);
    for (const u of ['a', 'b', 'c']) {
      expect((await call('POST', '/v1/items/later/tickets', { userId: u }, SVC)).status).toBe(202);
      expect((await call('POST', '/v1/items/soon/tickets', { userId: u }, SVC)).status).toBe(202);
    }
    const drawn = await waitFor(() => call('GET', '/v1/items/soon'), (r) => r.body.preQueue?.seed !== undefined, 20_000);
    const shown = { later: later.body.preQueue.seedHash as string, soon: drawn.body.preQueue };
    expect(shown.soon).toMatchObject({ seedHash: soon.body.preQueue.seedHash, size: 3 });

    const admin = new Redis(redisServer.url);
    await admin.flushall();
    admin.disconnect();
    // The daemon makes both again from Postgres (within a second or so of the loss).
    const back = await waitFor(() => call('GET', '/v1/items/later'), (r) => r.status === 200 && r.body.counts.waiting === 0);
    expect(back.body.preQueue).toEqual({ fromMs: 60 * 60_000, seedHash: shown.later });
    // Drawn again (the tickets drawn went with Redis): the seed revealed is the one shown before.
    const again = await waitFor(() => call('GET', '/v1/items/soon'), (r) => r.status === 200 && r.body.preQueue?.seed !== undefined, 20_000);
    expect(again.body.preQueue).toMatchObject({ seedHash: shown.soon.seedHash, seed: shown.soon.seed });
  });
});
