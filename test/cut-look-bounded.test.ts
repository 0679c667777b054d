import postgres from 'postgres';
import { describe, expect, it } from 'vitest';
import { whenDone } from './support/cleanup.js';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { testRedis } from './support/redis.js';

/**
 * A cut looks at who bought (queue/definitions.ts) and gives the look up after 2 s. The look's
 * statements must end then too: one left waiting on Postgres held a connection of the pool the
 * sales share for as long as whatever held it up lasted (here another session's lock on `orders`;
 * in a review, a read walking 1.5 M rows of other items). Postgres ends them now (its
 * statement_timeout, set for the look's transaction), and the cut still goes on without the look:
 * Postgres's cancel (57014, which elsewhere reads as Postgres busy) is a slow read here, so a
 * window's end does not wait for a look that cannot finish.
 */
const { newPrefix } = testRedis();
const db = await testDb();

describe("a cut's look at who bought", () => {
  it('does not leave its read running on Postgres after giving it up', { timeout: 60_000 }, async () => {
    const d = await inProcessDaemon({ prefix: newPrefix(), databaseUrl: db.url });
    const closesAt = Date.now() + 2500;
    await d.define('lk', { handler: 'seckill', config: { stock: 5 }, gate: { mode: 'closed' }, closesAt: new Date(closesAt).toISOString() });
    const ids: string[] = [];
    for (const u of ['a', 'b']) ids.push((await d.call('POST', '/v1/items/lk/tickets', { userId: u }, SVC)).body.ticketId as string);

    const other = postgres(db.url, { max: 2, onnotice: () => {} });
    whenDone(() => other.end({ timeout: 1 }));
    const locker = await other.reserve();
    await locker`begin`;
    await locker`lock table ticket_outcomes in access exclusive mode`;
    whenDone(async () => {
      await locker`rollback`.catch(() => {});
      locker.release();
    });

    // The window's end goes on without the look (Postgres ended it at 2 s: a slow read, not
    // Postgres away, for which the end would wait), and ends the waiting tickets.
    const views = await waitFor(() => Promise.all(ids.map((id) => d.call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body))), (vs) => vs.every((v) => v.state === 'cancelled'), 20_000);
    expect(views.map((v) => v.outcome?.reason)).toEqual(['closed', 'closed']);
    // And nothing of the look still waits on the lock (it did, until the lock went).
    const readsLeft = () => other`select count(*)::int as n from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid() and state = 'active' and query ilike '%select user_id, ticket_id from ticket_outcomes%'`.then(([r]) => r.n as number);
    expect(await waitFor(readsLeft, (n) => n === 0, 5_000)).toBe(0);
  });
});
