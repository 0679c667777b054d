import postgres from 'postgres';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { connectDb } from '../src/db/client.js';
import { testDb } from './support/db.js';
import { askAgainOn503, joinAll, userIds } from './support/joins.js';
import { testRedis } from './support/redis.js';

/**
 * A database made read-only by its default (`ALTER DATABASE … SET default_transaction_read_only
 * = on`: maintenance, or a migration tool's guard), then made writable again by resetting it, with
 * no session ended. Sessions keep the default they started under: the daemon's, opened while it
 * was read-only, went on refusing every sale, and the sale stayed paused for as long as postgres.js
 * kept those connections (30–60 min; a review's run watched 40 s of it). The README promises sales
 * within about a second of Postgres's return.
 */
const { newPrefix } = testRedis();
const db = await testDb();
const { call } = await inProcessDaemon({ prefix: newPrefix(), databaseUrl: db.url, env: { FLOODGATE_JOB_BACKOFF_MS: '50' } });
const admin = postgres(inject('pgAdminUrl'), { max: 1, onnotice: () => {} });
const dbName = new URL(db.url).pathname.slice(1);
afterAll(async () => {
  await admin.unsafe(`alter database "${dbName}" reset default_transaction_read_only`).catch(() => {});
  await admin.end({ timeout: 2 });
});

/** Read-only for new sessions, and the open ones ended: the daemon's pool reconnects read-only. */
async function readOnlyNow() {
  await admin.unsafe(`alter database "${dbName}" set default_transaction_read_only = on`);
  const [{ now }] = await admin`select clock_timestamp() as now`;
  await admin`select pg_terminate_backend(pid) from pg_stat_activity where datname = ${dbName} and backend_start <= ${now}`;
  await waitFor(() => admin`select pid from pg_stat_activity where datname = ${dbName} and backend_start <= ${now}`, (rows) => rows.length === 0, 10_000);
  // Asked many things at once, the daemon's pool opens all its sessions now, read-only (a busy
  // daemon's pool is full): none opened after the reset hides the stale ones.
  await Promise.all(Array.from({ length: 40 }, () => call('GET', '/readyz', undefined, null)));
  const [{ n }] = await admin`select count(*)::int as n from pg_stat_activity where datname = ${dbName} and application_name like 'floodgate-%'`;
  expect(n).toBeGreaterThanOrEqual(5);
}
const writableAgain = () => admin.unsafe(`alter database "${dbName}" reset default_transaction_read_only`);
const tally = (vs: { state: string }[]) => vs.reduce<Record<string, number>>((acc, v) => ({ ...acc, [v.state]: (acc[v.state] ?? 0) + 1 }), {});

describe('Postgres writable again after a read-only default, its sessions left alone', () => {
  it('resumes a paused sale within seconds, not when the pool retires its connections', { timeout: 90_000 }, async () => {
    const stock = 10;
    expect((await call('PUT', '/v1/items/rr', { handler: 'seckill', config: { stock }, gate: { mode: 'closed' } })).status).toBe(201);
    const joins = await joinAll((u) => call('POST', '/v1/items/rr/tickets', { userId: u }, SVC), userIds(0, 30));
    const ids = joins.map((r) => r.body.ticketId as string);
    const views = () => Promise.all(ids.map((id) => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body)));
    expect((await call('PATCH', '/v1/items/rr/gate', { mode: 'manual', rate: 5 })).status).toBe(200);
    await readOnlyNow();
    // The sale is refused: it pauses (no ticket fails).
    const paused = await waitFor(views, (vs) => vs.some((v) => v.reason === 'paused'), 20_000);
    expect(paused.some((v) => v.reason === 'paused')).toBe(true);
    expect(paused.filter((v) => v.state === 'failed')).toEqual([]);

    // Writable again for new sessions; nobody ends the old ones (and nothing asks /readyz).
    await writableAgain();
    const ended = await waitFor(views, (vs) => vs.every((v) => v.state === 'succeeded' || v.state === 'rejected'), 30_000);
    expect(tally(ended)).toEqual({ succeeded: stock, rejected: ids.length - stock }); // before: paused for good
    expect((await db.sql`select user_id from orders where item_id = 'rr'`).length).toBe(stock);
    expect((await call('GET', '/readyz', undefined, null)).status).toBe(200);
  });

  it('is ready again, and takes item changes, with no sale running to notice it', { timeout: 60_000 }, async () => {
    expect((await call('PUT', '/v1/items/rr2', { handler: 'seckill', config: { stock: 5 }, gate: { mode: 'closed' } })).status).toBe(201);
    await readOnlyNow();
    expect((await call('PATCH', '/v1/items/rr2/gate', { mode: 'manual' })).status).toBe(503);
    expect((await call('GET', '/readyz', undefined, null)).body.checks.postgres).toBe('fail');
    await writableAgain();
    const back = await waitFor(() => call('GET', '/readyz', undefined, null), (r) => r.status === 200, 15_000);
    expect(back.status).toBe(200); // before: 503 (postgres: fail) for as long as the pool kept its sessions
    // A change is taken again: asked again after a 503, as a client does — a session busy when the
    // stale ones were ended may answer read-only once, and that answer ends it (at most once a
    // second). A CI run's PATCH right after /readyz's 200 met one. Before: 503 for good.
    const patched = await askAgainOn503(() => call('PATCH', '/v1/items/rr2/gate', { mode: 'manual' }), [200], Date.now() + 10_000, 'PATCH /v1/items/rr2/gate');
    expect(patched.status).toBe(200);
  });

  it("ends the pool's idle read-only sessions, but never one holding an advisory lock (an operator's write in progress)", { timeout: 30_000 }, async () => {
    await admin.unsafe(`alter database "${dbName}" set default_transaction_read_only = on`);
    const handle = connectDb(db.url, { max: 4 });
    try {
      // Four sessions, started read-only; one of them reserved, holding a lock as op-revs does.
      await Promise.all(Array.from({ length: 4 }, () => handle.sql`select pg_sleep(0.05)`));
      const held = await handle.sql.reserve();
      try {
        await held`select pg_advisory_lock(4242)`;
        const [{ pid }] = await held<{ pid: number }[]>`select pg_backend_pid() as pid`;
        await writableAgain();
        expect(await handle.endStaleReadOnly()).toBeGreaterThanOrEqual(1);
        // The lock's session is there still, and holds it.
        const [{ n }] = await admin<{ n: number }[]>`select count(*)::int as n from pg_locks where locktype = 'advisory' and pid = ${pid}`;
        expect(n).toBe(1); // (ended, its lock would have gone with it)
        expect((await held<{ ro: string }[]>`select current_setting('transaction_read_only') as ro`)[0].ro).toBe('on');
      } finally {
        await held`select pg_advisory_unlock(4242)`.catch(() => {});
        held.release();
      }
    } finally {
      await writableAgain();
      await handle.close();
    }
  });
});
