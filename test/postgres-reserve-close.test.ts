import postgres from 'postgres';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { connectDb } from '../src/db/client.js';
import { createOpRevRows } from '../src/db/op-revs.js';
import { testDb } from './support/db.js';

/**
 * postgres.js 3.4.9: a connection reserved with `sql.reserve()` whose session the server ended
 * while it was reserved (a failover, an operator's pg_terminate_backend, a read-only switch that
 * ends the old sessions) stayed the reserved handle's, and its `release()` put the dead connection
 * in the pool's open list: from then on it failed every query handed to it (CONNECTION_CLOSED), for
 * good — the daemon read Postgres as unreachable again and again and paused its sales (CI saw a
 * sale never finish after a read-only switch). The operators' lock session (db/op-revs.ts) is such
 * a reservation. scripts/patch-postgres.mjs (run on install) makes the close end the reservation.
 */
const db = await testDb();
const admin = postgres(inject('pgAdminUrl'), { max: 1, onnotice: () => {} });
afterAll(() => admin.end({ timeout: 2 }));

/** Every answer of `n` queries at once on `sql`, each bounded (a query that waits is counted as such). */
async function answers(sql: postgres.Sql, n: number) {
  const one = () => {
    let timer: NodeJS.Timeout | undefined;
    return Promise.race([
      sql`select pg_sleep(0.01)`.then(() => 'ok', (e: { code?: string }) => e.code ?? 'error'),
      new Promise<string>((r) => (timer = setTimeout(() => r('still waiting after 5 s'), 5000))),
    ]).finally(() => clearTimeout(timer));
  };
  const all = await Promise.all(Array.from({ length: n }, one));
  return all.reduce<Record<string, number>>((acc, a) => ({ ...acc, [a]: (acc[a] ?? 0) + 1 }), {});
}

const ended = (pid: number) => admin`select 1 from pg_stat_activity where pid = ${pid}`.then((r) => r.length === 0);
async function endSession(pid: number) {
  await admin`select pg_terminate_backend(${pid})`;
  for (const until = Date.now() + 10_000; !(await ended(pid)); ) {
    if (Date.now() > until) throw new Error(`session ${pid} still there after 10 s`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('a reserved connection whose session the server ended', () => {
  it('fails its next query, and once released leaves the pool serving every query', async () => {
    const { sql, close } = connectDb(db.url, { max: 3 });
    try {
      await sql`select 1`;
      const reserved = await sql.reserve();
      const [{ pid }] = await reserved<{ pid: number }[]>`select pg_backend_pid() as pid`;
      await endSession(pid);
      // (The close reaches the client a moment after the backend is gone.)
      await new Promise((r) => setTimeout(r, 200));
      const next = await reserved`select 1`.then(() => 'ok', (e: { code?: string }) => e.code);
      expect(next).toBe('CONNECTION_CLOSED');
      reserved.release();
      // Before the patch: { ok: 20, CONNECTION_CLOSED: 10 } — the dead connection, back in the open list.
      expect(await answers(sql, 30)).toEqual({ ok: 30 });
      expect(await answers(sql, 30)).toEqual({ ok: 30 });
    } finally {
      await close();
    }
  });

  // (A guard of op-revs's own handling of such a session: it passed on the unmended driver too —
  // there the pool happened to connect the slot again before the session was given back.)
  it("as the operators' lock session, ended mid-write: that write's lock is let go, and the next writes and every query work", async () => {
    const { sql, close } = connectDb(db.url, { max: 3 });
    const revs = createOpRevRows(sql);
    try {
      await revs.locked('a', async () => {
        const [{ pid }] = await db.sql<{ pid: number }[]>`select pid from pg_locks where locktype = 'advisory' and granted and database = (select oid from pg_database where datname = current_database())`;
        await endSession(pid);
        await new Promise((r) => setTimeout(r, 200));
      });
      expect(await answers(sql, 30)).toEqual({ ok: 30 });
      // The next writes take a new session, and their locks are given back.
      for (const scope of ['a', 'b', 'a']) expect(await revs.locked(scope, () => revs.bump(scope))).toBeGreaterThan(0);
      expect(await answers(sql, 30)).toEqual({ ok: 30 });
      expect(await db.sql`select 1 from pg_locks where locktype = 'advisory' and database = (select oid from pg_database where datname = current_database())`).toHaveLength(0);
    } finally {
      await close();
    }
  });
});
