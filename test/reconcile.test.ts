import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { builtDaemon } from './support/daemon.js';
import { testDb } from './support/db.js';
import { redisUrl, testRedis, unlinkPrefix } from './support/redis.js';
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
    expect(JSON.parse(stdout).reconciled).toMatchObject([{ itemId: 'rc', left: 10 }]);
    const shards = await redis.hvals(`${prefix}{rc}:stock`);
    expect(shards.map(Number).reduce((a, b) => a + b, 0)).toBe(10);

    const second = await buy('rc', Array.from({ length: 25 }, (_, i) => `b${i}`));
    expect(second.filter((v) => v.state === 'succeeded').length, JSON.stringify(second.map((v) => [v.state, v.outcome?.reason ?? v.reason ?? null]))).toBe(10);
    const [{ n }] = await db.sql`select count(*)::int as n from orders where item_id = 'rc'`;
    expect(n).toBe(30);
  });

  it('corrects a Redis stock counter in both directions on start while no sale is in flight', async () => {
    await call('PUT', '/v1/items/rc2', { handler: 'seckill', config: { stock: 5 } });
    await buy('rc2', ['x1', 'x2']);
    await redis.hset(`${prefix}{rc2}:stock`, 's0', 1000);
    const check = await inProcessDaemon({ prefix, databaseUrl: db.url }); // a daemon start runs the check
    expect((await check.call('GET', '/v1/items/rc2')).body.remaining).toBe(3);
    // Units stranded (a counter lower than Postgres allows) come back too: no false "sold out".
    await redis.hset(`${prefix}{rc2}:stock`, 's0', 0);
    const again = await inProcessDaemon({ prefix, databaseUrl: db.url });
    expect((await again.call('GET', '/v1/items/rc2')).body.remaining).toBe(3);
    const more = await buy('rc2', ['y1', 'y2', 'y3', 'y4']);
    expect(more.filter((v) => v.state === 'succeeded').length).toBe(3);
  });
});
