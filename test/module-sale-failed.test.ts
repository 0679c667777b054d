import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { holdStockRow, testDb } from './support/db.js';
import { testRedis } from './support/redis.js';

/**
 * A deployment's handler that sells through ctx.sell (here seckill's sale with a 300 ms deadline
 * of its own) and fails after its sale began — given up at its deadline while a row lock held the
 * sale, or throwing once it was made — must not tell its buyer `failed` next to a committed
 * order (a review: `failed`/`timeout`, the order in Postgres, the unit gone). Such a ticket ends
 * `succeeded` with its order, or goes back to the line while its sale is undecided.
 */
const { newPrefix } = testRedis();
const db = await testDb();
const handlersModule = path.resolve(import.meta.dirname, 'fixtures/sale-handler.ts');
const { call, define } = await inProcessDaemon({
  prefix: newPrefix(),
  databaseUrl: db.url,
  env: { FLOODGATE_HANDLERS_MODULE: handlersModule, FLOODGATE_JOB_ATTEMPTS: '2', FLOODGATE_JOB_BACKOFF_MS: '50' },
});
const view = (id: string) => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body);
const orders = (itemId: string) => db.sql`select user_id, order_id::text as id from orders where item_id = ${itemId} and status <> 'released'`;

describe("a module's sale whose run failed", () => {
  it('given up at its deadline while the sale waited: the buyer is told their order', { timeout: 60_000 }, async () => {
    await define('m1', { handler: 'quicksale', config: { stock: 2 } });
    const lock = await holdStockRow(db.sql, 'm1');
    const { ticketId } = (await call('POST', '/v1/items/m1/tickets', { userId: 'alice' }, SVC)).body as { ticketId: string };
    // Both attempts given up (300 ms + 1 s each) while the lock holds the sale.
    await new Promise((r) => setTimeout(r, 3500));
    expect((await view(ticketId)).state).not.toBe('failed');
    await lock.release();
    const v = await waitFor(() => view(ticketId), (x) => x.state !== 'admitted' && x.state !== 'waiting', 20_000);
    const rows = await orders('m1');
    expect(rows).toHaveLength(1);
    expect(v.state).toBe('succeeded');
    expect(v.outcome.result.orderId).toBe(rows[0].id);
  });

  it('throwing after its sale was made: the buyer is told their order', { timeout: 30_000 }, async () => {
    await define('m2', { handler: 'quicksale', config: { stock: 2 } });
    const { ticketId } = (await call('POST', '/v1/items/m2/tickets', { userId: 'bob', payload: { throwAfter: true } }, SVC)).body as { ticketId: string };
    const v = await waitFor(() => view(ticketId), (x) => x.state !== 'admitted' && x.state !== 'waiting', 20_000);
    const rows = await orders('m2');
    expect(rows).toHaveLength(1);
    expect(v.state).toBe('succeeded');
    expect(v.outcome.result.orderId).toBe(rows[0].id);
  });
});
