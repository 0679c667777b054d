import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { testDb } from './support/db.js';
import { inProcessDaemon, recordingLogger, SVC, waitFor } from './support/daemon-inproc.js';
import { OUTAGE_ANSWER_MS } from './support/http.js';
import { ownRedis } from './support/redis-server.js';

const redisServer = await ownRedis();
const db = await testDb();
const logs = recordingLogger('warn', 1000);
const { call } = await inProcessDaemon({ prefix: `fgo:${randomBytes(4).toString('hex')}:`, databaseUrl: db.url, log: logs.log, env: { REDIS_URL: redisServer.url } });

async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; res: T }> {
  const t0 = performance.now();
  const res = await fn();
  return { ms: performance.now() - t0, res };
}

describe('when Redis dies and comes back empty', () => {
  it('answers 503 within a second while Redis is down, then re-creates the item from Postgres without a restart', async () => {
    expect((await call('PUT', '/v1/items/sku-r', { handler: 'seckill', config: { stock: 1000 } })).status).toBe(201);
    const joined = await call('POST', '/v1/items/sku-r/tickets', { userId: 'u-before' }, SVC);
    expect(joined.status).toBe(202);
    const oldTicket = joined.body.ticketId as string;
    // Sold, and its outcome in the ledger, before Redis dies.
    await waitFor(() => db.sql`select status from ticket_outcomes where user_id = 'u-before'`, (r) => r.length === 1, 20_000);

    await redisServer.kill();
    // Past the item cache's 250 ms, and long enough for ioredis's reconnect backoff to grow.
    await new Promise((r) => setTimeout(r, 2000));

    const join = await timed(() => call('POST', '/v1/items/sku-r/tickets', { userId: 'u-down' }, SVC));
    expect(join.res.status).toBe(503);
    expect(join.res.body.error.code).toBe('unavailable');
    expect(join.ms).toBeLessThan(OUTAGE_ANSWER_MS);
    const poll = await timed(() => call('GET', `/v1/tickets/${oldTicket}`, undefined, null));
    expect(poll.res.status).toBe(503);
    expect(poll.ms).toBeLessThan(OUTAGE_ANSWER_MS);
    const ready = await timed(() => call('GET', '/readyz', undefined, null));
    expect(ready.res.status).toBe(503);
    expect(ready.res.body.checks).toMatchObject({ redis: 'fail', postgres: 'ok' });
    expect(ready.ms).toBeLessThan(OUTAGE_ANSWER_MS);

    // BullMQ's workers report the lost connection over and over: said once, then every 5 s at most.
    // (25 lines in the ~2.5 s of this outage before.)
    expect((logs.lines().match(/"msg":"worker error"/g) ?? []).length).toBeLessThanOrEqual(3);
    expect((logs.lines().match(/"msg":"redis error \(workers\)"/g) ?? []).length).toBeLessThanOrEqual(3);
    await redisServer.start();
    const back = await waitFor(
      () => call('POST', '/v1/items/sku-r/tickets', { userId: 'u-after' }, SVC),
      (r) => r.status === 202,
      10_000,
    );
    expect(back.status).toBe(202);
    // The ticket sold before the loss is answered from Postgres (the item kept its secret).
    const [order] = await db.sql`select order_id::text as id from orders where user_id = 'u-before'`;
    expect((await call('GET', `/v1/tickets/${oldTicket}`, undefined, null)).body).toMatchObject({ ticketId: oldTicket, userId: 'u-before', state: 'succeeded', outcome: { result: { orderId: order.id } } });
    // Re-created with Postgres's stock: every unit but u-before's is in the counter, or held
    // (admitted) or sold by the one ticket joined since (admission takes its unit, so 998 + 1 as
    // soon as it is admitted).
    const restored = (await call('GET', '/v1/items/sku-r')).body;
    expect(restored).toMatchObject({ handler: 'seckill' });
    expect(restored.remaining + restored.counts.admitted + restored.counts.succeeded).toBe(999);
    expect((await call('GET', '/readyz', undefined, null)).status).toBe(200);
    // Sales resume too: the ticket joined after the loss is sold.
    const sold = await waitFor(() => call('GET', `/v1/tickets/${back.body.ticketId}`, undefined, null), (r) => r.body?.state === 'succeeded', 20_000);
    expect(sold.body.state).toBe('succeeded');
    // …and so does the outcome ledger, whose consumer group went with the data.
    const rows = await waitFor(() => db.sql`select status from ticket_outcomes where user_id = 'u-after'`, (r) => r.length === 1, 20_000);
    expect(rows.map((r) => r.status)).toEqual(['succeeded']);
  });

  it('re-creates items when Redis is flushed under a live connection, and records their outcomes again', async () => {
    expect((await call('PUT', '/v1/items/sku-f', { handler: 'seckill', config: { stock: 10 } })).status).toBe(201);
    const outcomeOf = (userId: string) =>
      waitFor(() => db.sql`select status from ticket_outcomes where user_id = ${userId}`, (r) => r.length === 1, 20_000).then((r) => r.map((x) => x.status));
    expect((await call('POST', '/v1/items/sku-f/tickets', { userId: 'u-unflushed' }, SVC)).status).toBe(202);
    expect(await outcomeOf('u-unflushed')).toEqual(['succeeded']);

    const { Redis } = await import('ioredis');
    const admin = new Redis(redisServer.url);
    await admin.flushall();
    admin.disconnect();
    const back = await waitFor(
      () => call('POST', '/v1/items/sku-f/tickets', { userId: 'u-flushed' }, SVC),
      (r) => r.status === 202,
      10_000,
    );
    expect(back.status).toBe(202);
    expect(await outcomeOf('u-flushed')).toEqual(['succeeded']);
  });
});
