import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { countedMemory } from '../src/redis/client.js';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { joinAll, userIds } from './support/joins.js';
import { ownRedis } from './support/redis-server.js';
import { expectSoldExactly } from './support/sale-checks.js';

// Redis at its maxmemory (noeviction) refuses every command that grows it: a join answered 500,
// and the sale could not drain (admitting, BullMQ's jobs and outcomes all write first).
const db = await testDb();
const redis = await ownRedis();
const direct = new Redis(redis.url);
afterAll(() => direct.disconnect());
const { call } = await inProcessDaemon({ prefix: 'fg:', databaseUrl: db.url, env: { REDIS_URL: redis.url, FLOODGATE_JOB_BACKOFF_MS: '50' } });

const usedMemory = async () => countedMemory(await direct.info('memory')).counted;
const join = (item: string, userId: string) => call('POST', `/v1/items/${item}/tickets`, { userId }, SVC);

describe('Redis near its memory limit', () => {
  it('refuses new joins (503) while a holder gets their ticket back and the line drains; a Redis out of memory is 503, never 500', { timeout: 90_000 }, async () => {
    const stock = 20;
    await call('PUT', '/v1/items/mem', { handler: 'seckill', config: { stock }, gate: { mode: 'closed' }, quotas: { perUser: { limit: 5, windowMs: 60_000 } } });
    const joins = await joinAll((u) => join('mem', u), userIds(0, 40));
    const ids = joins.map((r) => r.body.ticketId as string);

    // used_memory at ~93% of maxmemory (the guard's default limit is 90%), on a Redis holding 20 MB
    // of other data: the 7% left (~1.5 MB) is what the line has to drain in, as a real Redis's
    // share would be (on the bare ~1 MB of an empty server, BullMQ's jobs alone took it).
    const ballast = direct.pipeline();
    for (let i = 0; i < 2000; i++) ballast.set(`ballast:${i}`, 'x'.repeat(10_000));
    await ballast.exec();
    await direct.config('SET', 'maxmemory', String(Math.ceil((await usedMemory()) / 0.93)));
    const ratio = () => call('GET', '/metrics', undefined, null).then((r) => Number(/^floodgate_redis_memory_used_ratio ([\d.]+)/m.exec(r.body as string)?.[1]));
    expect(await waitFor(ratio, (x) => x > 0.9, 10_000)).toBeGreaterThan(0.9); // read once a second
    const refused = await join('mem', 'late');
    expect(refused.status).toBe(503);
    expect(refused.body.error).toMatchObject({ code: 'unavailable' });
    expect(refused.body.error.message).toMatch(/memory limit/);
    // A refused join writes nothing, not even its user's quota counter.
    expect(await direct.keys('*late*')).toEqual([]);
    const again = await join('mem', 'u0');
    expect(again.status).toBe(200);
    expect(again.body.ticketId).toBe(ids[0]);
    expect((await call('GET', `/v1/tickets/${ids[1]}`, undefined, null)).body.state).toBe('waiting');

    // The line drains under the limit: every unit sold once, the rest told sold_out.
    await call('PATCH', '/v1/items/mem/gate', { mode: 'manual', rate: 50, maxInFlight: 10 });
    await expectSoldExactly(db.sql, 'mem', stock, ids, (id) => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body));

    // Past maxmemory, what writes is refused by Redis itself: the contract's 503, not a 500.
    await direct.config('SET', 'maxmemory', '1');
    const oom = await call('PUT', '/v1/items/mem2', { handler: 'external', gate: { mode: 'closed' } });
    expect(oom.status).toBe(503);
    expect(oom.body.error).toMatchObject({ code: 'unavailable' });

    await direct.config('SET', 'maxmemory', '0');
    await waitFor(() => call('PUT', '/v1/items/mem2', { handler: 'external', gate: { mode: 'closed' } }), (r) => r.status === 200 || r.status === 201);
    const back = await waitFor(() => join('mem2', 'late'), (r) => r.status === 202, 10_000);
    expect(back.status).toBe(202);
  });
});
