import postgres from 'postgres';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { proxyFor } from './support/proxy.js';
import { testRedis, unlinkPrefix } from './support/redis.js';
import { joinAll, userIds } from './support/joins.js';

const { redis, newPrefix } = testRedis();
const db = await testDb();
const { proxy, url: viaProxy } = await proxyFor(db.url);
afterAll(() => proxy.close()); // after the daemon's stop (registered below, so run before this)
const prefix = newPrefix();
const { call, daemon, define } = await inProcessDaemon({ prefix, databaseUrl: viaProxy, env: { FLOODGATE_JOB_BACKOFF_MS: '50' } });

// Five seconds: longer than a running job's ticket lease (RUN_LEASE_MS, 3 s) and the connect
// timeout (3 s), and postgres.js's reconnect backoff reaches its 0.5 s cap within the first second
// (src/db/client.ts), so every retry the daemon has would have given up on a sale by then (the
// chaos bench's cut lasts 10 s).
const OUTAGE_MS = 5000;

/** When an event stream's text came to contain `text` (ms), or null if it ended first. */
const readUntil = (events: Response, text: string) =>
  (async () => {
    const dec = new TextDecoder();
    let got = '';
    for await (const chunk of events.body!) if ((got += dec.decode(chunk as Uint8Array, { stream: true })).includes(text)) return Date.now();
    return null;
  })().catch(() => null);

describe('Postgres unreachable for five seconds mid-sale', () => {
  it('pauses the sale instead of failing it: no unit lost, no false sold-out, every buyer answered once it is back', { timeout: 90_000 }, async () => {
    const stock = 20;
    await call('PUT', '/v1/items/pg', { handler: 'seckill', config: { stock }, gate: { mode: 'closed' } });
    const joins = await joinAll((u) => call('POST', '/v1/items/pg/tickets', { userId: u }, SVC), userIds(0, 60));
    const ids = joins.map((r) => r.body.ticketId as string);
    // A line standing perfectly still (one admission per 100 s, the first one spent), its second
    // ticket's stream open before the cut: the pause is news there too, with no head moving to carry it.
    // (Made before the sale opens: on a busy machine its set-up outlasted the 2 s the sale takes to sell out.)
    await call('PUT', '/v1/items/pg-still', { handler: 'seckill', config: { stock: 5 }, gate: { mode: 'closed' } });
    await call('POST', '/v1/items/pg-still/tickets', { userId: 'first' }, SVC);
    const still = await call('POST', '/v1/items/pg-still/tickets', { userId: 'still' }, SVC);
    await call('PATCH', '/v1/items/pg-still/gate', { mode: 'manual', rate: 0.01 });
    await waitFor(() => call('GET', '/v1/items/pg-still').then((r) => r.body), (v) => v.counts?.succeeded === 1);
    expect((await call('GET', `/v1/tickets/${still.body.ticketId}`, undefined, null)).body.reason).toBeUndefined();
    const stillStream = new AbortController();
    const stillEvents = await fetch(`${daemon.url}/v1/tickets/${still.body.ticketId}/events`, { signal: stillStream.signal });
    const stillTold = readUntil(stillEvents, '"reason":"paused"');

    await call('PATCH', '/v1/items/pg/gate', { mode: 'manual', rate: 10, maxInFlight: 5 });
    await waitFor(() => call('GET', '/v1/items/pg').then((r) => r.body), (v) => v.counts?.succeeded >= 3);
    await proxy.cut();
    const cutAt = Date.now();
    // Readiness says which store is gone; nobody is told a false outcome meanwhile.
    const ready = await waitFor(() => call('GET', '/readyz', undefined, null), (r) => r.status === 503);
    expect(ready.status).toBe(503);
    // Joins need only Redis: the line keeps taking users while Postgres is away.
    const during = await call('POST', '/v1/items/pg/tickets', { userId: 'late' }, SVC);
    expect(during.status).toBe(202);
    ids.push(during.body.ticketId);
    // The waiting page's event stream of that ticket: the pause is news for its watchers.
    const stream = new AbortController();
    const events = await fetch(`${daemon.url}/v1/tickets/${during.body.ticketId}/events`, { signal: stream.signal });
    const toldPaused = readUntil(events, '"reason":"paused"');
    // Once a sale has found Postgres away, the daemon admits none of the item's tickets (none would
    // sell), and the line says so: reason paused and no ETA, rather than a countdown to an
    // admission that is not coming. Nothing is left in flight.
    const paused = await waitFor(() => call('GET', `/v1/tickets/${during.body.ticketId}`, undefined, null).then((r) => r.body), (v) => v.reason === 'paused', OUTAGE_MS);
    const pausedAt = Date.now();
    expect(paused).toMatchObject({ state: 'waiting', reason: 'paused' });
    expect(paused.etaMs).toBeUndefined();
    await waitFor(() => call('GET', '/v1/items/pg').then((r) => r.body.counts), (c) => c?.admitted === 0, OUTAGE_MS);
    // The operator is told so too: the item reads paused (it read open while nothing was admitted).
    expect((await call('GET', '/v1/items/pg')).body.state).toBe('paused');
    expect(await toldPaused).not.toBeNull();
    // Told as the pause began, not at the stream's next heartbeat (10 s after it opened).
    expect((await stillTold)! - pausedAt).toBeLessThan(5000);
    stream.abort();
    stillStream.abort();
    while (Date.now() - cutAt < OUTAGE_MS) {
      const views = await Promise.all(ids.map((id) => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body)));
      expect(views.filter((v) => v.state === 'failed' || v.state === 'rejected')).toEqual([]);
      expect(views.filter((v) => v.state === 'admitted')).toEqual([]);
      expect(views.filter((v) => v.state === 'waiting').every((v) => v.reason === 'paused')).toBe(true);
      await new Promise((r) => setTimeout(r, 500));
    }
    const before = (await call('GET', '/v1/items/pg')).body.counts.succeeded;
    await proxy.restore();

    const views = await waitFor(
      () => Promise.all(ids.map((id) => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body))),
      (vs) => vs.every((v) => v.state === 'succeeded' || v.state === 'rejected' || v.state === 'failed'),
      60_000,
    );
    const states = views.reduce<Record<string, number>>((acc, v) => ({ ...acc, [v.state]: (acc[v.state] ?? 0) + 1 }), {});
    expect(states).toEqual({ succeeded: stock, rejected: ids.length - stock });
    expect(views.filter((v) => v.state === 'rejected').every((v) => v.outcome.reason === 'sold_out')).toBe(true);
    expect(before).toBeLessThan(stock);
    const orders = await db.sql`select order_id::text as id, user_id from orders where item_id = 'pg'`;
    expect(orders.length).toBe(stock);
    expect(new Set(orders.map((o) => o.user_id)).size).toBe(stock);
    const owner = new Map(orders.map((o) => [o.id, o.user_id]));
    for (const v of views.filter((x) => x.state === 'succeeded')) expect(owner.get(v.outcome.result.orderId)).toBe(v.userId);
    // Redis stock + Postgres sold = total once quiet. A sale whose commit's answer the cut lost
    // gave its unit back to Redis and then found its order: the counter reads one too many until
    // the stock keeper's next round sets it from Postgres (src/catalog/stock-keeper.ts).
    const count = async () => {
      const [{ sold, total }] = await db.sql`select sold, total from item_stock where item_id = 'pg'`;
      return { counted: sold + (await redis.hvals(`${prefix}{pg}:stock`)).map(Number).reduce((a, b) => a + b, 0), total };
    };
    const quiet = await waitFor(count, (c) => c.counted === c.total, 20_000);
    expect(quiet.counted).toBe(quiet.total);
  });
});

describe('Postgres refusing writes (read-only sessions, as after a failover to a standby)', () => {
  const admin = postgres(inject('pgAdminUrl'), { max: 1, onnotice: () => {} });
  const dbName = new URL(db.url).pathname.slice(1);
  afterAll(async () => {
    await admin.unsafe(`alter database "${dbName}" reset default_transaction_read_only`).catch(() => {});
    await admin.end({ timeout: 2 });
  });
  // New sessions default to read-only; ending the open ones makes every pool reconnect into it.
  // (A terminated backend exits a moment later: until every older session is gone, a write may
  // still land on one of them.)
  let isReadOnly = false;
  const readOnly = async (on: boolean) => {
    isReadOnly = on;
    await admin.unsafe(`alter database "${dbName}" ${on ? 'set default_transaction_read_only = on' : 'reset default_transaction_read_only'}`);
    const [{ now }] = await admin`select clock_timestamp() as now`;
    const older = () => admin`select pid from pg_stat_activity where datname = ${dbName} and backend_start <= ${now}`;
    await admin`select pg_terminate_backend(pid) from pg_stat_activity where datname = ${dbName} and backend_start <= ${now}`;
    await waitFor(older, (rows) => rows.length === 0, 10_000);
  };

  it('pauses the sale instead of failing it, and sells the stock exactly once writes come back', { timeout: 90_000 }, async () => {
    try {
      const stock = 20;
      await call('PUT', '/v1/items/ro', { handler: 'seckill', config: { stock }, gate: { mode: 'closed' } });
      const joins = await joinAll((u) => call('POST', '/v1/items/ro/tickets', { userId: u }, SVC), userIds(100, 160));
      const ids = joins.map((r) => r.body.ticketId as string);
      expect((await call('PATCH', '/v1/items/ro/gate', { mode: 'manual', rate: 20, maxInFlight: 5 })).status).toBe(200);
      await readOnly(true);
      // An item change needs a Postgres write: refused as unavailable, not as an error of ours.
      const change = await call('PATCH', '/v1/items/ro/gate', { rate: 25 });
      expect(change.status).toBe(503);
      expect(change.body.error.code).toBe('unavailable');
      // Readiness asks whether Postgres takes writes, not whether it answers.
      const ready = await call('GET', '/readyz', undefined, null);
      expect(ready.status).toBe(503);
      expect(ready.body.checks).toMatchObject({ redis: 'ok', postgres: 'fail' });
      const views = () => Promise.all(ids.map((id) => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body)));
      // Sales are refused: the item pauses (its waiting tickets read `paused`), no ticket fails.
      const paused = await waitFor(views, (vs) => vs.some((v) => v.reason === 'paused'), 20_000);
      expect(paused.some((v) => v.reason === 'paused')).toBe(true);
      // Tickets admitted just before the switch go back to the line once their sale is refused.
      await waitFor(() => call('GET', '/v1/items/ro').then((r) => r.body.counts), (c) => c?.admitted === 0, 20_000);
      for (const until = Date.now() + 3000; Date.now() < until; await new Promise((r) => setTimeout(r, 300))) {
        const vs = await views();
        expect(vs.filter((v) => v.state === 'failed' || v.state === 'rejected')).toEqual([]);
        expect(vs.filter((v) => v.state === 'admitted')).toEqual([]);
        // And stays paused: a probe that took `select 1` for "up" resumed the sale every 250 ms,
        // only to have it refused again.
        expect(vs.filter((v) => v.state === 'waiting').every((v) => v.reason === 'paused')).toBe(true);
      }
      await readOnly(false);
      const ended = await waitFor(views, (vs) => vs.every((v) => v.state === 'succeeded' || v.state === 'rejected' || v.state === 'failed'), 60_000);
      const states = ended.reduce<Record<string, number>>((acc, v) => ({ ...acc, [v.state]: (acc[v.state] ?? 0) + 1 }), {});
      expect(states).toEqual({ succeeded: stock, rejected: ids.length - stock });
      const orders = await db.sql`select user_id from orders where item_id = 'ro'`;
      expect(orders.length).toBe(stock);
      expect(new Set(orders.map((o) => o.user_id)).size).toBe(stock);
    } finally {
      // Only if a failure left it read-only: turning it back ends every session again, and the
      // daemon then reads Postgres as down for a while (the next test's item changes answered 503).
      if (isReadOnly) await readOnly(false).catch(() => {});
    }
  });

  // (Its waits are bounded, 130 s at most in all: a step that runs out fails with its own message, not the test's timeout.)
  it('restores after a Redis loss the items that need no write at once, and the others once writes come back', { timeout: 150_000 }, async () => {
    try {
      // (Once the daemon reads Postgres as writable again, after the test before; defined as a
      // client would, a 503 asked again.)
      await waitFor(() => call('GET', '/readyz', undefined, null), (r) => r.status === 200, 30_000);
      await define('ro-a-sk', { handler: 'seckill', config: { stock: 5 } });
      await define('ro-z-ext', { handler: 'external' });
      await readOnly(true);
      await unlinkPrefix(redis, prefix);
      // The external item needs no write to come back (it has no stock; its secret is kept), and
      // is not held up by a stock item restored before it (rows in the order they were made) that does.
      const ext = await waitFor(() => call('GET', '/v1/items/ro-z-ext'), (r) => r.status === 200, 20_000);
      expect(ext.status).toBe(200);
      expect((await call('POST', '/v1/items/ro-z-ext/tickets', { userId: 'u1' }, SVC)).status).toBe(202);
      // A seckill item's count is a write (a recount under the stock row's lock): it waits.
      expect((await call('GET', '/v1/items/ro-a-sk')).status).toBe(404);
      await readOnly(false);
      // (Restored, it may read `paused` a moment first: turning read-only off ends every session,
      // and the daemon reads Postgres as away until its probe passes. A clean-clone run at six
      // files at once caught it so.)
      const sk = await waitFor(() => call('GET', '/v1/items/ro-a-sk'), (r) => r.status === 200 && r.body.state !== 'paused', 20_000);
      expect(sk.body).toMatchObject({ state: 'open', remaining: 5 });
    } finally {
      // Only if a failure left it read-only: turning it back ends every session again, and the
      // daemon then reads Postgres as down for a while (the next test's item changes answered 503).
      if (isReadOnly) await readOnly(false).catch(() => {});
    }
  });
});
