import { describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { ownRedis } from './support/redis-server.js';
import { joinAll, userIds } from './support/joins.js';

const db = await testDb();
const redis = await ownRedis({ appendfsync: 'everysec' });
const { call } = await inProcessDaemon({
  prefix: 'fg:',
  databaseUrl: db.url,
  env: { REDIS_URL: redis.url, FLOODGATE_JOB_LOCK_MS: '2000', FLOODGATE_DISPATCH_LEASE_MS: '2000' },
});

describe('Redis killed mid-sale and restarted from its AOF', () => {
  it('the sale finishes without a restart of the daemon: exactly the stock sold, nobody twice, every ticket ended', { timeout: 120_000 }, async () => {
    const stock = 60;
    await call('PUT', '/v1/items/kr', { handler: 'seckill', config: { stock }, gate: { mode: 'closed' } });
    const ids = (await joinAll((u) => call('POST', '/v1/items/kr/tickets', { userId: u }, SVC), userIds(0, 180), { batch: 30 })).map((r) => r.body.ticketId as string);
    // The joins are on disk (everysec fsyncs within a second); what the kill loses is the sale's last second.
    await new Promise((r) => setTimeout(r, 1500));
    await call('PATCH', '/v1/items/kr/gate', { mode: 'manual', rate: 20, maxInFlight: 10 });
    await waitFor(() => call('GET', '/v1/items/kr').then((r) => r.body), (v) => v.counts.succeeded >= 10);
    await redis.kill();
    // While Redis is down, a poll fails (fast, as an error: never a made-up answer).
    const during = await call('GET', `/v1/tickets/${ids[0]}`, undefined, null);
    expect(during.status).toBeGreaterThanOrEqual(500);
    await redis.start();

    const views = await waitFor(
      () => Promise.all(ids.map((id) => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body))),
      (vs) => vs.every((v) => v.state === 'succeeded' || v.state === 'rejected'),
      60_000,
    );
    const states = views.reduce<Record<string, number>>((acc, v) => ({ ...acc, [v.state]: (acc[v.state] ?? 0) + 1 }), {});
    expect(states).toEqual({ succeeded: stock, rejected: ids.length - stock });
    expect(views.filter((v) => v.state === 'rejected').every((v) => v.outcome.reason === 'sold_out')).toBe(true);
    const orders = await db.sql`select order_id::text as id, user_id from orders where item_id = 'kr'`;
    expect(orders.length).toBe(stock);
    expect(new Set(orders.map((o) => o.user_id)).size).toBe(stock);
    const owner = new Map(orders.map((o) => [o.id, o.user_id]));
    for (const v of views.filter((x) => x.state === 'succeeded')) expect(owner.get(v.outcome.result.orderId)).toBe(v.userId);
    // The counter may have come back from the AOF higher than it was; once quiet it says what Postgres says.
    const item = await waitFor(() => call('GET', '/v1/items/kr').then((r) => r.body), (v) => v.remaining === 0);
    expect(item).toMatchObject({ state: 'sold_out', remaining: 0 });
  });
});
