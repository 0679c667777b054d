import postgres from 'postgres';
import { afterAll, describe, expect, it } from 'vitest';
import { testDb } from './support/db.js';
import { waitFor } from './support/daemon-inproc.js';

/**
 * postgres.js 3.4.9 defers a small write to setImmediate and, once there, writes to its socket
 * without asking whether the connection closed meanwhile: a write on a connection whose server
 * went away threw `TypeError: Cannot read properties of null (reading 'write')` from the
 * immediate, where no caller can catch it, and took the process down (porsager/postgres#1154,
 * #1208; seen in this suite during a read-only Postgres fault). scripts/patch-postgres.mjs
 * (run on install) makes such a write fail the connection's queries as CONNECTION_CLOSED.
 */
const db = await testDb();
const admin = postgres(db.url, { max: 1, onnotice: () => {} });
afterAll(() => admin.end({ timeout: 2 }));

describe("postgres.js's write to a closed connection", () => {
  it('fails the query with a connection error instead of throwing where nobody can catch it', async () => {
    const sql = postgres(db.url, { max: 1, onnotice: () => {} });
    const escaped: unknown[] = [];
    const onUncaught = (err: unknown) => void escaped.push(err);
    process.on('uncaughtException', onUncaught);
    try {
      // A reserved connection stays pinned after its server ends (the pool cannot rotate it away).
      const reserved = await sql.reserve();
      const [{ pid }] = await reserved<{ pid: number }[]>`select pg_backend_pid() as pid`;
      await admin`select pg_terminate_backend(${pid})`;
      await waitFor(() => admin`select count(*)::int as n from pg_stat_activity where pid = ${pid}`.then((r) => r[0].n), (n) => n === 0, 10_000);
      // The close has reached the client once the server's backend is gone; a turn or two of the loop to read it.
      await new Promise((r) => setTimeout(r, 100));
      const err = await reserved`select 1`.then(
        () => null,
        (e: unknown) => e,
      );
      await new Promise((r) => setImmediate(r));
      expect(escaped).toEqual([]);
      expect((err as { code?: string } | null)?.code).toMatch(/^CONNECTION_(CLOSED|ENDED|DESTROYED)$/);
      reserved.release();
    } finally {
      process.off('uncaughtException', onUncaught);
      await sql.end({ timeout: 2 });
    }
  });
});
