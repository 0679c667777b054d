import { describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { ownRedis } from './support/redis-server.js';

/**
 * The last unit's sale commits, and Redis stalls (0.8 s, SIGSTOP) just as the daemon cuts the item
 * sold out: the cut's command times out (the API connection's 500 ms). The sale is done and its
 * user must be told so; the cut is made again by whoever finds the counter empty next.
 */
const db = await testDb();
const redis = await ownRedis();
// One attempt: a run that fails settles `failed` at once (with five, the fifth failure does).
const { call } = await inProcessDaemon({ prefix: 'fg:', databaseUrl: db.url, env: { REDIS_URL: redis.url, FLOODGATE_JOB_ATTEMPTS: '1' } });

describe('a sold-out cut that Redis cannot take that moment', () => {
  it('does not fail the ticket whose sale committed: it ends succeeded with its order', { timeout: 60_000 }, async () => {
    await call('PUT', '/v1/items/so', { handler: 'seckill', config: { stock: 1 }, gate: { mode: 'closed' } });
    const alice = (await call('POST', '/v1/items/so/tickets', { userId: 'alice' }, SVC)).body.ticketId as string;
    // The sale waits on the stock row, held by the test, until Redis is stopped.
    const side = await db.sql.reserve();
    try {
      await side`begin`;
      await side`select * from item_stock where item_id = 'so' for update`;
      await call('PATCH', '/v1/items/so/gate', { mode: 'manual', rate: 10, maxInFlight: 1 });
      const waiting = await waitFor(
        () => db.sql`select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`.then((r) => r[0]!.n as number),
        (n) => n > 0,
      );
      expect(waiting).toBeGreaterThan(0);
      redis.pause();
      await side`commit`;
      // The sale commits now and its cut meets the stopped Redis.
      await new Promise((r) => setTimeout(r, 800));
    } finally {
      redis.resume();
      side.release();
    }
    const end = await waitFor(() => call('GET', `/v1/tickets/${alice}`, undefined, null).then((r) => r.body), (v) => v.state === 'succeeded' || v.state === 'rejected' || v.state === 'failed', 20_000);
    // (Before: `failed` / handler_error, with alice's order in Postgres.)
    expect(end).toMatchObject({ state: 'succeeded' });
    const orders = await db.sql`select order_id::text as id, user_id from orders where item_id = 'so'`;
    expect(orders.map((o) => o.user_id)).toEqual(['alice']);
    expect(end.outcome.result.orderId).toBe(orders[0]!.id);
    // The cut is made after all: a newcomer is told sold out.
    const late = await waitFor(() => call('POST', '/v1/items/so/tickets', { userId: 'bob' }, SVC), (r) => r.status === 410);
    expect(late.status).toBe(410);
  });
});
