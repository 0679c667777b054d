import { createServer, type Socket } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { connectDb } from '../src/db/client.js';
import { begin } from '../src/db/transactions.js';
import { isPgLostCode } from '../src/kernel/pg-lost.js';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { proxyFor } from './support/proxy.js';
import { testRedis } from './support/redis.js';
import { joinAll, userIds } from './support/joins.js';
import { expectSoldExactly } from './support/sale-checks.js';

// Postgres falls silent mid-sale: every connection the daemon holds stops getting answers and
// no reset ever comes (a partition, a failover that moved the address); new connections pass.
// The server keeps its end of the old ones, with whatever transaction each had open.
const { redis, newPrefix } = testRedis();
const db = await testDb();
const { proxy, url: viaProxy } = await proxyFor(db.url);
afterAll(() => proxy.close()); // after the daemon's stop (registered below, so run before this)
const prefix = newPrefix();
const PG_TIMEOUT_MS = 1500;
const { call } = await inProcessDaemon({
  prefix,
  databaseUrl: viaProxy,
  env: { FLOODGATE_JOB_BACKOFF_MS: '50', FLOODGATE_PG_TIMEOUT_MS: String(PG_TIMEOUT_MS) },
});

describe('a Postgres connection that falls silent', () => {
  it('is given up after the timeout, and the transaction it left open releases its locks on the server', { timeout: 30_000 }, async () => {
    const { proxy: own, url } = await proxyFor(db.url);
    const ghost = connectDb(url, { max: 1, timeoutMs: PG_TIMEOUT_MS });
    const next = connectDb(url, { max: 1, timeoutMs: PG_TIMEOUT_MS });
    try {
      await db.sql`create table silent_rows (id int primary key, n int not null)`;
      await db.sql`insert into silent_rows values (1, 0)`;
      let at = 0;
      // A transaction as the daemon makes them (db/transactions.ts), its row locked till its end.
      const lost = await begin(ghost.sql, async (tx) => {
        await tx`update silent_rows set n = n + 1 where id = 1`;
        own.silence();
        at = performance.now();
        await tx`select 1`;
      }).then(() => null, (err: { code?: string }) => err);
      const ms = performance.now() - at;
      expect(isPgLostCode(lost?.code)).toBe(true);
      expect(ms).toBeGreaterThanOrEqual(PG_TIMEOUT_MS - 50);
      expect(ms).toBeLessThan(PG_TIMEOUT_MS + 10_000); // (the fault: minutes; a loaded machine's timers run late)
      // A new connection gets the row: the server ended the session the silence left inside its
      // transaction (rolled back: n is still 0) instead of keeping its lock until it hears of the close.
      const [row] = await next.sql`update silent_rows set n = n + 10 where id = 1 returning n`;
      expect(row.n).toBe(10);
    } finally {
      await ghost.sql.end({ timeout: 0 });
      await next.close();
      await own.close();
    }
  });
  it('is given up when an answer stops halfway (its bytes came, its ReadyForQuery never does)', { timeout: 30_000 }, async () => {
    // Every request answered with ParseComplete alone.
    await expectGivenUp(Buffer.from([0x31, 0, 0, 0, 4]), (sql) => sql`select 1`);
  });

  it('is given up when a statement described before its first run (Parse, Describe, Flush: no Sync) gets no answer', { timeout: 30_000 }, async () => {
    const { proxy: own, url } = await proxyFor(db.url);
    const handle = connectDb(url, { max: 1, timeoutMs: PG_TIMEOUT_MS });
    try {
      await handle.sql`select 1`; // connected, types fetched
      own.silence();
      // A statement with parameters, new to the connection: postgres.js sends Parse, Describe and
      // Flush, and its Sync only after the description.
      const at = performance.now();
      const err = await handle.sql`select ${1}::int as n`.then(() => null, (e: { code?: string }) => e);
      const ms = performance.now() - at;
      expect(err?.code).toBe('ETIMEDOUT');
      expect(ms).toBeLessThan(PG_TIMEOUT_MS + 10_000); // (the fault: minutes; a loaded machine's timers run late)
    } finally {
      await handle.sql.end({ timeout: 0 });
      await own.close();
    }
  });
});

/**
 * A server that lets the client in (AuthenticationOk, ReadyForQuery) and then answers every
 * request with `answer`; `query` on a watched connection to it must fail with ETIMEDOUT after the
 * timeout.
 */
async function expectGivenUp(answer: Buffer, query: (sql: ReturnType<typeof connectDb>['sql']) => Promise<unknown>) {
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    let started = false;
    s.on('data', () => {
      if (!started) {
        started = true;
        s.write(Buffer.from([0x52, 0, 0, 0, 8, 0, 0, 0, 0, 0x5a, 0, 0, 0, 5, 0x49]));
      } else s.write(answer);
    });
    s.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  const handle = connectDb(`postgres://postgres@127.0.0.1:${port}/none`, { max: 1, timeoutMs: PG_TIMEOUT_MS });
  try {
    const at = performance.now();
    const err = await query(handle.sql).then(() => null, (e: { code?: string }) => e);
    const ms = performance.now() - at;
    expect(err?.code).toBe('ETIMEDOUT');
    expect(ms).toBeGreaterThanOrEqual(PG_TIMEOUT_MS - 50);
    expect(ms).toBeLessThan(PG_TIMEOUT_MS + 10_000); // (the fault: minutes; a loaded machine's timers run late)
  } finally {
    await handle.sql.end({ timeout: 0 });
    for (const s of sockets) s.destroy();
    await new Promise((r) => server.close(r));
  }
}

describe('Postgres silent mid-sale (no answer, no reset)', () => {
  it('gives up on the silent connections and sells the stock exactly once on new ones', { timeout: 90_000 }, async () => {
    const stock = 20;
    await call('PUT', '/v1/items/quiet', { handler: 'seckill', config: { stock }, gate: { mode: 'closed' } });
    const joins = await joinAll((u) => call('POST', '/v1/items/quiet/tickets', { userId: u }, SVC), userIds(0, 60));
    const ids = joins.map((r) => r.body.ticketId as string);
    await call('PATCH', '/v1/items/quiet/gate', { mode: 'manual', rate: 20, maxInFlight: 5 });
    // Silent as the sale opens: the pool's connections have yet to run the sale's statements, and
    // postgres.js describes a statement before its first run with no Sync out (a version of the
    // watch that counted only Syncs left such a sale at 18 of 20 for good, 3 runs of 3).
    proxy.silence();
    const silentAt = Date.now();

    await expectSoldExactly(db.sql, 'quiet', stock, ids, (id) => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body));
    console.log(`sale over ${Date.now() - silentAt} ms after Postgres fell silent`);

    const left = await waitFor(() => redis.hvals(`${prefix}{quiet}:stock`).then((vs) => vs.map(Number).reduce((x, y) => x + y, 0)), (n) => n === 0, 20_000);
    expect(left).toBe(0);
  });
});
