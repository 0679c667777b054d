import postgres from 'postgres';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { createPgHealth } from '../src/db/health.js';
import { createLogger } from '../src/kernel/logger.js';
import { inProcessDaemon, recordingLogger, SVC, waitFor } from './support/daemon-inproc.js';
import { holdStockRow, testDb } from './support/db.js';
import { joinAll, userIds } from './support/joins.js';
import { testRedis } from './support/redis.js';

/**
 * A Postgres that gives calls up for now — here a `lock_timeout` an operator set on the database
 * while another session holds the item's stock row, as a long report or a manual fix would —
 * answers a sale 55P03 whatever its rows. Such a sale waits, like one refused by a lost
 * connection; it used to be asked again row by row and to fail its tickets after their attempts.
 */
const { newPrefix } = testRedis();
const db = await testDb();
const admin = postgres(inject('pgAdminUrl'), { max: 1, onnotice: () => {} });
afterAll(() => admin.end({ timeout: 2 }));
await admin.unsafe(`alter database ${new URL(db.url).pathname.slice(1)} set lock_timeout = '200ms'`);
const logs = recordingLogger('warn');
// Two attempts 50 ms apart: on the code before, a ticket failed within about a second of the lock.
const { call } = await inProcessDaemon({ prefix: newPrefix(), databaseUrl: db.url, log: logs.log, env: { FLOODGATE_JOB_ATTEMPTS: '2', FLOODGATE_JOB_BACKOFF_MS: '50' } });

describe('a Postgres that gives sales up for now (lock or statement timeout, deadlock)', () => {
  it('pauses the sale, tells the waiting users so, and sells once the lock is gone: nobody failed, no unit lost', { timeout: 60_000 }, async () => {
    const stock = 3;
    await call('PUT', '/v1/items/busy', { handler: 'seckill', config: { stock }, gate: { mode: 'closed' } });
    const joins = await joinAll((u) => call('POST', '/v1/items/busy/tickets', { userId: u }, SVC), userIds(0, 5));
    const ids = joins.map((r) => r.body.ticketId as string);
    const lock = await holdStockRow(db.sql, 'busy');
    await call('PATCH', '/v1/items/busy/gate', { mode: 'manual', rate: 100 });
    // A ticket the refused sale put back reads `paused` (no ETA) while the sales wait.
    const paused = await waitFor(
      () => Promise.all(ids.map((id) => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body))),
      (views) => views.some((v) => v.reason === 'paused') || views.some((v) => v.state === 'failed'),
      15_000,
    );
    expect(paused.filter((v) => v.state === 'failed'), logs.lines()).toEqual([]);
    expect(paused.some((v) => v.reason === 'paused'), logs.lines()).toBe(true);
    expect(logs.lines()).toContain('55P03');
    await lock.release();
    const views = await waitFor(
      () => Promise.all(ids.map((id) => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body))),
      (vs) => vs.every((v) => ['succeeded', 'rejected', 'failed'].includes(v.state)),
      30_000,
    );
    expect(views.map((v) => v.state).sort(), logs.lines()).toEqual(['rejected', 'rejected', 'succeeded', 'succeeded', 'succeeded']);
    expect(views.filter((v) => v.state === 'rejected').map((v) => v.outcome?.reason)).toEqual(['sold_out', 'sold_out']);
    const orders = await db.sql`select user_id from orders where item_id = 'busy'`;
    expect(new Set(orders.map((o) => o.user_id)).size).toBe(stock);
    const [row] = await db.sql`select sold from item_stock where item_id = 'busy'`;
    expect(row.sold).toBe(stock);
  });
  it('says, when sales resume, whether the pause was for a busy Postgres only (no stock recount then) or for a lost one', async () => {
    const health = createPgHealth(db.sql, createLogger('silent'), { probeMs: 10, probeTimeoutMs: 2000 });
    try {
      const ups: boolean[] = [];
      health.onUp((busy) => ups.push(busy));
      health.markDown('55P03', true);
      await waitFor(async () => ups.length, (n) => n === 1, 5000);
      health.markDown('55P03', true);
      health.markDown('ECONNRESET'); // lost meanwhile: the recount is due
      await waitFor(async () => ups.length, (n) => n === 2, 5000);
      expect(ups).toEqual([true, false]);
    } finally {
      health.stop();
    }
  });
});
