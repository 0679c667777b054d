import { describe, expect, it } from 'vitest';
import { inProcessDaemon, recordingLogger, SVC } from './support/daemon-inproc.js';
import { holdStockRow, testDb } from './support/db.js';
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
});
