import { describe, expect, it } from 'vitest';
import postgres from 'postgres';
import { connectDb } from '../src/db/client.js';
import { inProcessDaemon, recordingLogger, SVC } from './support/daemon-inproc.js';
import { holdLock, holdStockRow, testDb } from './support/db.js';
import { joinAll, userIds } from './support/joins.js';
import { testRedis } from './support/redis.js';
import { expectSoldExactly } from './support/sale-checks.js';

/**
 * An operator's lock held long mid-sale (a manual fix holding the item's stock row, as a report or
 * a VACUUM FULL would the table). The daemon gives up a connection that heard nothing for
 * FLOODGATE_PG_TIMEOUT_MS (15 s) and opens another; the server did not know the client had gone,
 * and kept the abandoned session waiting on the lock until it went — a review saw the daemon's
 * sessions grow from 4 to 20 over a two-minute lock, each holding a connection slot. A sale now
 * waits at most 10 s for a lock (drizzle/0024), and is asked again on a connection it still holds.
 */
const { newPrefix } = testRedis();
const db = await testDb();
const logs = recordingLogger('warn');
const { call } = await inProcessDaemon({ prefix: newPrefix(), databaseUrl: db.url, log: logs.log });

/** The daemon's sessions waiting on a lock, and for how long (s). */
const lockWaits = () =>
  db.sql<{ waitedS: number }[]>`
    select extract(epoch from now() - query_start)::float as "waitedS" from pg_stat_activity
    where datname = current_database() and application_name like 'floodgate-%' and wait_event_type = 'Lock'`;

describe('a lock held long on what a sale needs', () => {
  it('leaves no session of the daemon waiting on it past 10 s, and the sale ends right once it goes', { timeout: 90_000 }, async () => {
    const stock = 3;
    await call('PUT', '/v1/items/locked', { handler: 'seckill', config: { stock }, gate: { mode: 'closed' } });
    const joins = await joinAll((u) => call('POST', '/v1/items/locked/tickets', { userId: u }, SVC), userIds(0, 6));
    const ids = joins.map((r) => r.body.ticketId as string);
    const lock = await holdStockRow(db.sql, 'locked');
    await call('PATCH', '/v1/items/locked/gate', { mode: 'manual', rate: 100 });
    // Past the 15 s after which the daemon gives a silent connection up: before, its first sale's
    // session was still waiting then, and one more for each connection given up.
    let longest = 0;
    const until = Date.now() + 20_000;
    while (Date.now() < until) {
      for (const w of await lockWaits()) longest = Math.max(longest, w.waitedS);
      await new Promise((r) => setTimeout(r, 500));
    }
    expect(longest, logs.lines()).toBeGreaterThan(3); // the sale did wait on the lock
    expect(longest, logs.lines()).toBeLessThan(12);
    await lock.release();
    await expectSoldExactly(db.sql, 'locked', stock, ids, (id) => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body));
  });

  it('a plain read given up while it waits on a lock is cancelled on the server, not left waiting there', { timeout: 30_000 }, async () => {
    await db.sql`create table if not exists locked_report (id int)`;
    // Its own pool, given up after 1.5 s of silence (the daemon's is 15 s).
    const pool = connectDb(db.url, { max: 1, timeoutMs: 1500 });
    const name = String((pool.sql.options as { connection?: Record<string, unknown> }).connection?.application_name);
    await pool.sql`select 1`; // connected, its types read (a type fetch cut short is postgres.js's unhandled rejection)
    // The lock holder on a plain client of its own: an idle watched connection to the same server is
    // given up with the silent one (kernel/silent-socket.ts), and the lock with it.
    const holder = postgres(db.url, { max: 1, onnotice: () => {} });
    const watcher = postgres(db.url, { max: 1, onnotice: () => {} });
    const lock = await holdLock(holder, (t) => t`lock table locked_report in access exclusive mode`);
    try {
      await expect(pool.sql`select count(*) from locked_report`).rejects.toThrow(/sent nothing for/);
      // Before: its session waited on the lock for as long as it was held.
      // (Asked on the holder's own server through a plain client: the test's watched pool had its idle
      // connection given up with the silent one, kernel/silent-socket.ts.)
      const waiting = async () => (await watcher`select count(*)::int as n from pg_stat_activity where application_name = ${name} and wait_event_type = 'Lock'`)[0].n as number;
      const until = Date.now() + 10_000;
      while ((await waiting()) > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
      expect(await waiting()).toBe(0);
    } finally {
      await lock.release();
      await pool.close();
      await holder.end({ timeout: 1 });
      await watcher.end({ timeout: 1 });
    }
  });
});
