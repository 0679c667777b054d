import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { builtDaemon } from './support/daemon.js';
import { testDb } from './support/db.js';
import { redisUrl, testRedis, unlinkPrefix } from './support/redis.js';
import { activeItemsKey } from '../src/redis/keys.js';
import { createScriptRunner, scripts } from '../src/redis/scripts.js';
import { joinAll } from './support/joins.js';

const { redis, newPrefix } = testRedis();
const db = await testDb();
const prefix = newPrefix();
// No item cache: after the reconcile the daemon reads the restored item at once.
const { call } = await inProcessDaemon({ prefix, databaseUrl: db.url, env: { FLOODGATE_CACHE_MS: '0' } });
const run = promisify(execFile);

async function buy(item: string, users: string[]) {
  // Joins after the last unit went are refused (410 sold_out): only the others have tickets.
  const joins = await joinAll((userId) => call('POST', `/v1/items/${item}/tickets`, { userId }, SVC), users, { also: [410] });
  const ids = joins.filter((r) => r.status !== 410).map((r) => r.body.ticketId as string);
  // One clean-clone CI run (of twelve on 5 Dec) read 0 of 10 sold 20 s into the sale after the
  // loss. The likely cause (found by reading, not seen happen): the reconcile command restored the
  // item before the daemon's own loss check, so the daemon went on trusting its copy of the active
  // set, and the joins' wakes came during a read of that set (test/idle-items.test.ts and
  // test/dispatcher.test.ts play both; fixed). The states are printed if it fails.
  return waitFor(
    () => Promise.all(ids.map((id) => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body))),
    (vs) => vs.every((v) => v.state === 'succeeded' || v.state === 'rejected'),
  );
}


describe('reconcile', () => {
  it('after a Redis loss, `npm run reconcile` restores the item and exactly the remaining stock', { timeout: 120_000 }, async () => {
    await call('PUT', '/v1/items/rc', { handler: 'seckill', config: { stock: 30, shards: 3 } });
    const first = await buy('rc', Array.from({ length: 20 }, (_, i) => `a${i}`));
    expect(first.filter((v) => v.state === 'succeeded').length).toBe(20);

    await unlinkPrefix(redis, prefix);
    const { stdout } = await run(process.execPath, [builtDaemon, 'reconcile', 'rc'], {
      cwd: path.resolve(import.meta.dirname, '..'),
      env: { ...process.env, REDIS_URL: redisUrl(), DATABASE_URL: db.url, FLOODGATE_REDIS_PREFIX: prefix, LOG_LEVEL: 'warn' },
    });
    const [report] = JSON.parse(stdout).reconciled;
    // Made again by this command (redisHad null) or by the daemon's loss check a moment before it.
    expect(report).toMatchObject(report.restored ? { itemId: 'rc', left: 10, redisHad: null, changed: true } : { itemId: 'rc', left: 10, redisHad: 10 });
    const shards = await redis.hvals(`${prefix}{rc}:stock`);
    expect(shards.map(Number).reduce((a, b) => a + b, 0)).toBe(10);
    // Again: nothing to change, and the report says so (it read `changed: true` for every item).
    const again = await run(process.execPath, [builtDaemon, 'reconcile', 'rc'], {
      cwd: path.resolve(import.meta.dirname, '..'),
      env: { ...process.env, REDIS_URL: redisUrl(), DATABASE_URL: db.url, FLOODGATE_REDIS_PREFIX: prefix, LOG_LEVEL: 'warn' },
    });
    expect(JSON.parse(again.stdout).reconciled).toEqual([{ itemId: 'rc', left: 10, redisHad: 10, changed: false }]);

    const second = await buy('rc', Array.from({ length: 25 }, (_, i) => `b${i}`));
    expect(second.filter((v) => v.state === 'succeeded').length, JSON.stringify(second.map((v) => [v.state, v.outcome?.reason ?? v.reason ?? null]))).toBe(10);
    const [{ n }] = await db.sql`select count(*)::int as n from orders where item_id = 'rc'`;
    expect(n).toBe(30);
  });

  it('restores after a Redis loss an item whose units are all reserved as held, not sold out, and sells a released unit', { timeout: 60_000 }, async () => {
    // Two items, so the stock keeper's round has more than one due (its shortcut compares counts only).
    const items = ['held-a', 'held-b'];
    const orders: string[] = [];
    for (const item of items) {
      await call('PUT', `/v1/items/${item}`, { handler: 'seckill', config: { stock: 1, reserveMs: 600_000 } });
      const [won] = await buy(item, ['first']);
      expect(won.state).toBe('succeeded');
      orders.push(won.outcome.result.orderId);
    }
    await unlinkPrefix(redis, prefix);
    // The daemon finds the loss and makes the items again from Postgres: 1 unit, reserved.
    for (const item of items) {
      const v = await waitFor(() => call('GET', `/v1/items/${item}`), (r) => r.status === 200);
      expect(v.body.state, JSON.stringify(v.body)).not.toBe('sold_out');
    }
    for (const id of orders) expect((await call('POST', `/v1/orders/${id}/release`, undefined, SVC)).status).toBe(200);
    for (const item of items) {
      const joined = await waitFor(() => call('POST', `/v1/items/${item}/tickets`, { userId: 'second' }, SVC), (r) => r.status === 202, 15_000);
      expect(joined.status, JSON.stringify(joined.body)).toBe(202);
    }
    const sold = await buy('held-a', ['second']);
    expect(sold[0].state).toBe('succeeded');
  });

  it('clears a sold-out flag that came while the counter held units (a late cut after a restock), and sells them', { timeout: 60_000 }, async () => {
    // Two such items, so the stock keeper's round has more than one due (its shortcut compares counts only).
    const items = ['late-cut-a', 'late-cut-b'];
    const { run: script } = createScriptRunner(redis, prefix);
    for (const item of items) {
      await call('PUT', `/v1/items/${item}`, { handler: 'seckill', config: { stock: 2 } });
      // What definitions.cut does, from a sale that read Postgres's "none left" before the restock.
      await script(scripts.cut, item, Date.now(), { stateChar: 'r', reason: 'sold_out', flag: 'soldOut', decidedAt: '', windowEnd: '', hold: '' });
      await redis.zadd(activeItemsKey(prefix), Date.now() + 60_000, item);
    }
    for (const item of items) {
      const v = await waitFor(() => call('GET', `/v1/items/${item}`), (r) => r.body.state !== 'sold_out', 15_000);
      expect(v.body, JSON.stringify(v.body)).toMatchObject({ state: 'open', remaining: 2 });
    }
    expect((await buy('late-cut-a', ['u1']))[0].state).toBe('succeeded');
  });

  it('corrects a Redis stock counter in both directions on start while no sale is in flight', async () => {
    await call('PUT', '/v1/items/rc2', { handler: 'seckill', config: { stock: 5 } });
    await buy('rc2', ['x1', 'x2']);
    await redis.hset(`${prefix}{rc2}:stock`, 's0', 1000);
    // A daemon start runs the check, once it listens (in the background: a start with thousands of
    // items listened only after it).
    const check = await inProcessDaemon({ prefix, databaseUrl: db.url });
    expect((await waitFor(() => check.call('GET', '/v1/items/rc2'), (r) => r.body.remaining === 3, 10_000)).body.remaining).toBe(3);
    // Units stranded (a counter lower than Postgres allows) come back too: no false "sold out".
    await redis.hset(`${prefix}{rc2}:stock`, 's0', 0);
    const again = await inProcessDaemon({ prefix, databaseUrl: db.url });
    expect((await waitFor(() => again.call('GET', '/v1/items/rc2'), (r) => r.body.remaining === 3, 10_000)).body.remaining).toBe(3);
    const more = await buy('rc2', ['y1', 'y2', 'y3', 'y4']);
    expect(more.filter((v) => v.state === 'succeeded').length).toBe(3);
  });

  it("listens before its start's reconcile is done: a stock row held locked does not hold the start", { timeout: 60_000 }, async () => {
    await call('PUT', '/v1/items/rc3', { handler: 'seckill', config: { stock: 4 } });
    await redis.hset(`${prefix}{rc3}:stock`, 's0', 1000);
    // Another session holds the item's stock row (a long transaction, a stuck migration).
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let locked!: () => void;
    const isLocked = new Promise<void>((r) => (locked = r));
    const tx = db.sql.begin(async (sql) => {
      await sql`select * from item_stock where item_id = 'rc3' for update`;
      locked();
      await held;
    });
    await isLocked;
    try {
      const starting = inProcessDaemon({ prefix, databaseUrl: db.url });
      const first = await Promise.race([starting.then(() => 'listening'), new Promise((r) => setTimeout(() => r('held'), 8000))]);
      expect(first).toBe('listening'); // before: held (the start reconciled every item before it listened)
      const d = await starting;
      expect((await d.call('GET', '/healthz', undefined, null)).status).toBe(200);
      release();
      await tx;
      expect((await waitFor(() => d.call('GET', '/v1/items/rc3'), (r) => r.body.remaining === 4, 20_000)).body.remaining).toBe(4);
    } finally {
      release();
      await tx.catch(() => {});
    }
  });
});
