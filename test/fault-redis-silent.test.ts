import { afterAll, describe, expect, it } from 'vitest';
import { SILENCE_MS } from '../src/infra/redis-client.js';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { joinAll, userIds } from './support/joins.js';
import { proxyFor } from './support/proxy.js';
import { redisUrl, testRedis } from './support/redis.js';
import { expectSoldExactly } from './support/sale-checks.js';

// Redis falls silent mid-sale: every connection the daemon holds (its API's, its admissions',
// BullMQ's) stops getting replies and no reset ever comes (a partition, a failover that moved
// the address, a NAT that forgot the flows); new connections pass.
const { newPrefix } = testRedis();
const db = await testDb();
const { proxy, url: viaProxy } = await proxyFor(redisUrl());
afterAll(() => proxy.close()); // after the daemon's stop (registered below, so run before this)
const { call } = await inProcessDaemon({ prefix: newPrefix(), databaseUrl: db.url, env: { REDIS_URL: viaProxy, FLOODGATE_JOB_BACKOFF_MS: '50' } });

describe('Redis silent mid-sale (no reply, no reset)', () => {
  it('gives up on the silent connections, answers again on new ones, and sells the stock exactly once', { timeout: 120_000 }, async () => {
    const stock = 20;
    await call('PUT', '/v1/items/hush', { handler: 'seckill', config: { stock }, gate: { mode: 'closed' } });
    await call('PUT', '/v1/items/hush-later', { handler: 'external', gate: { mode: 'closed' } });
    const joins = await joinAll((u) => call('POST', '/v1/items/hush/tickets', { userId: u }, SVC), userIds(0, 60));
    const ids = joins.map((r) => r.body.ticketId as string);
    await call('PATCH', '/v1/items/hush/gate', { mode: 'manual', rate: 20, maxInFlight: 5 });
    await waitFor(() => call('GET', '/v1/items/hush').then((r) => r.body), (v) => v.counts?.succeeded >= 3);
    proxy.silence();
    const silentAt = Date.now();

    // Told 503 while the API's connection owes replies, then answered again once it is made anew:
    // 202, or 200 with the ticket when a join of the user's that was still in time as the
    // connection was given up was sent again by ioredis on the new one (a join is once per user
    // either way; a join already answered 503 is not sent again: test/redis-client.test.ts).
    const first = await call('POST', '/v1/items/hush-later/tickets', { userId: 'during' }, SVC);
    expect(first.status).toBe(503);
    const joined = await waitFor(() => call('POST', '/v1/items/hush-later/tickets', { userId: 'during' }, SVC), (r) => r.status === 202 || r.status === 200, 30_000);
    const joinedAfter = Date.now() - silentAt;
    expect([200, 202]).toContain(joined.status);
    expect(joined.body).toMatchObject({ userId: 'during', state: 'waiting' });
    expect(joinedAfter).toBeLessThan(SILENCE_MS.api + 5000);

    await expectSoldExactly(db.sql, 'hush', stock, ids, (id) => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body));
    console.log(`joins answered again ${joinedAfter} ms after Redis fell silent; sale over ${Date.now() - silentAt} ms after`);
  });
});
