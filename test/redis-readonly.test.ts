import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { freePort } from './support/proxy.js';
import { ownRedis } from './support/redis-server.js';

/**
 * Redis turned into a replica under the daemon (a failover that demoted its master, an operator's
 * REPLICAOF): every write is refused `READONLY` until it is a master again. Users and workers are
 * told `503` (try again), never `500`; `/readyz` says Redis is not usable; and the sale goes on
 * once it is a master again. Joins that came together went to Redis as one script call, whose
 * item errors read `join-5: READONLY …` and answered 500 (20 of 20 in a review's run), and
 * `/readyz` answered 200 on a PING.
 */
const redisServer = await ownRedis();
const db = await testDb();

describe('a Redis that refuses writes as a replica (READONLY)', () => {
  it('answers 503 to joins, pulls and write-backs that come together, not ready, and sells again once it is a master', { timeout: 60_000 }, async () => {
    const { call } = await inProcessDaemon({ prefix: `fgro:${randomBytes(4).toString('hex')}:`, databaseUrl: db.url, env: { REDIS_URL: redisServer.url } });
    expect((await call('PUT', '/v1/items/ro-sk', { handler: 'seckill', config: { stock: 100 }, gate: { mode: 'manual' } })).status).toBe(201);
    expect((await call('PUT', '/v1/items/ro-ext', { handler: 'external', gate: { mode: 'manual' } })).status).toBe(201);
    for (let i = 0; i < 5; i++) expect((await call('POST', '/v1/items/ro-ext/tickets', { userId: `w${i}` }, SVC)).status).toBe(202);
    const leased = (await call('POST', '/v1/items/ro-ext/pull', { max: 5 }, SVC)).body.tickets as { ticketId: string; leaseId: string }[];
    expect(leased.length).toBe(5);
    expect((await call('GET', '/readyz', undefined, null)).status).toBe(200);

    const admin = new Redis(redisServer.url);
    // A master nothing listens at: the replica never syncs, so it keeps its data.
    await admin.call('REPLICAOF', '127.0.0.1', String(await freePort()));
    try {
      const joins = await Promise.all(Array.from({ length: 20 }, (_, i) => call('POST', '/v1/items/ro-sk/tickets', { userId: `u${i}` }, SVC)));
      const pulls = await Promise.all(Array.from({ length: 4 }, () => call('POST', '/v1/items/ro-ext/pull', { max: 1 }, SVC)));
      const backs = await Promise.all(leased.map((l) => call('POST', `/v1/tickets/${l.ticketId}/outcome`, { leaseId: l.leaseId, status: 'succeeded' }, SVC)));
      const statuses = [...joins, ...pulls, ...backs].map((r) => r.status);
      expect(statuses.filter((s) => s !== 503)).toEqual([]); // before: 500s
      expect(joins[0].body.error.code).toBe('unavailable');
      const ready = await call('GET', '/readyz', undefined, null);
      expect([ready.status, ready.body.checks.redis]).toEqual([503, 'fail']); // before: 200, redis ok
    } finally {
      await admin.call('REPLICAOF', 'NO', 'ONE');
      admin.disconnect();
    }
    // A master again: the same users join and buy, the worker's write-backs are taken.
    const again = await waitFor(() => call('POST', '/v1/items/ro-sk/tickets', { userId: 'u0' }, SVC), (r) => r.status === 202, 10_000);
    expect(again.status).toBe(202);
    expect(await waitFor(() => call('GET', `/v1/tickets/${again.body.ticketId}`, undefined, null).then((r) => r.body.state), (s) => s === 'succeeded')).toBe('succeeded');
    for (const l of leased) expect((await call('POST', `/v1/tickets/${l.ticketId}/outcome`, { leaseId: l.leaseId, status: 'succeeded' }, SVC)).status).toBe(200);
    expect((await call('GET', '/readyz', undefined, null)).status).toBe(200);
  });
});
