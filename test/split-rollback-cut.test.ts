import { describe, expect, it } from 'vitest';
import { ticketRef } from '../src/kernel/ticket-ref.js';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { userIds } from './support/joins.js';
import { rollbackItem, snapshotItem, testRedis } from './support/redis.js';

/**
 * A split item (lines > 1) after Redis went back to a copy from before its sale, as one line is
 * (rollback-bought-cut.test.ts): its buyers are found on their own sub-lines, held in doubt at the
 * cut and end `succeeded` with their orders (a review: with the ledger behind at the rollback, the
 * cut ended them `rejected`/`sold_out`, the ledger kept that next to their orders, and every daemon
 * but the one that saw them succeed told them so); and a user whose end a rollback took back gets
 * a new ticket when joining again, as on one line.
 */
const { redis, newPrefix } = testRedis();
const db = await testDb();
const prefix = newPrefix();
const { call } = await inProcessDaemon({ prefix, databaseUrl: db.url, env: { FLOODGATE_DOUBT_GRACE_MS: '500', FLOODGATE_TICKET_STATE_TTL_MS: '1000' } });
const poll = async (id: string) => (await call('GET', `/v1/tickets/${id}`, undefined, null)).body;
const row = async (id: string) => (await db.sql`select status, reason from ticket_outcomes where ticket_id = ${ticketRef(id)}`)[0];

/** Holds the ledger's writes (another session's lock on its table) until released. */
async function holdLedger() {
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  let locked!: () => void;
  const taken = new Promise<void>((r) => (locked = r));
  const tx = db.sql.begin(async (t) => {
    await t`lock table ticket_outcomes in exclusive mode`;
    locked();
    await held;
  });
  await Promise.race([taken, tx]);
  return { release: () => (release(), tx.then(() => undefined)) };
}

describe('a split item rolled back past its sale', () => {
  it('tells its buyers their orders, whatever the ledger had written', { timeout: 120_000 }, async () => {
    await call('PUT', '/v1/items/rl', { handler: 'seckill', config: { stock: 3 }, lines: 4, gate: { mode: 'closed' } });
    const users = userIds(0, 6, 'u');
    const ids: string[] = [];
    for (const u of users) ids.push((await call('POST', '/v1/items/rl/tickets', { userId: u }, SVC)).body.ticketId as string);
    const snap = await snapshotItem(redis, prefix, 'rl');
    // The ledger held up: the rollback takes back done entries it has not read.
    const lock = await holdLedger();
    await call('PATCH', '/v1/items/rl/gate', { mode: 'manual', rate: 100, maxInFlight: 5 });
    await waitFor(() => Promise.all(ids.map(poll)), (vs) => vs.every((v) => v.state !== 'waiting' && v.state !== 'admitted'), 30_000);
    await call('PATCH', '/v1/items/rl/gate', { mode: 'closed' });
    const buyers = new Set((await db.sql`select user_id from orders where item_id = 'rl'`).map((r) => r.user_id as string));
    expect(buyers.size).toBe(3);

    await rollbackItem(redis, prefix, 'rl', snap);
    // Every ticket waits again; the stock keeper finds no unit in Postgres and cuts the item.
    const views = await waitFor(() => Promise.all(ids.map(poll)), (vs) => vs.every((v) => v.state !== 'waiting' && v.state !== 'admitted'), 30_000);
    await lock.release();
    const rows = await waitFor(() => Promise.all(ids.map(row)), (rs) => rs.every((r) => !!r), 20_000);
    const told = (i: number) => `${users[i]} ${views[i].state} ${rows[i]?.status}`;
    expect(users.map((_, i) => told(i))).toEqual(users.map((u) => (buyers.has(u) ? `${u} succeeded succeeded` : `${u} rejected rejected`)));
    // A daemon that never saw them succeed reads the same.
    const second = await inProcessDaemon({ prefix, databaseUrl: db.url });
    // (Once the doubt the cut held them in is resolved: `admitted` until then, never `rejected`.)
    const read = () => Promise.all(ids.map((id) => second.call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body.state as string)));
    const again = await waitFor(read, (ss) => !ss.includes('admitted'), 20_000);
    expect(again).toEqual(users.map((u) => (buyers.has(u) ? 'succeeded' : 'rejected')));
  });

  it('gives a user told cancelled a new ticket when they join again', { timeout: 60_000 }, async () => {
    await call('PUT', '/v1/items/rc', { handler: 'external', lines: 4 });
    const t = (await call('POST', '/v1/items/rc/tickets', { userId: 'hal' }, SVC)).body.ticketId as string;
    const snap = await snapshotItem(redis, prefix, 'rc');
    expect((await call('DELETE', `/v1/tickets/${t}`, undefined, null)).body.state).toBe('cancelled');
    await waitFor(() => row(t), (r) => !!r);
    await rollbackItem(redis, prefix, 'rc', snap);
    expect((await waitFor(() => poll(t), (v) => v.state === 'cancelled', 5_000)).state).toBe('cancelled');
    const joined = await call('POST', '/v1/items/rc/tickets', { userId: 'hal' }, SVC);
    expect([joined.status, joined.body.ticketId === t]).toEqual([202, false]);
    expect(await poll(t)).toMatchObject({ state: 'cancelled' });
  });
});

// A daemon of its own, under a default key quota of one join a second.
const qdb = await testDb();
const qprefix = newPrefix();
const q = await inProcessDaemon({ prefix: qprefix, databaseUrl: qdb.url, env: { FLOODGATE_DEFAULT_KEY_QUOTA: '1', FLOODGATE_TICKET_STATE_TTL_MS: '1000' } });

describe("a split item's rejoin after a rollback, under the deployment's default key quota", () => {
  it('counts the join once against the key quota', { timeout: 60_000 }, async () => {
    const qpoll = async (id: string) => (await q.call('GET', `/v1/tickets/${id}`, undefined, null)).body;
    await q.call('PUT', '/v1/items/rq', { handler: 'external', lines: 4 });
    const t = (await q.call('POST', '/v1/items/rq/tickets', { userId: 'kim' }, SVC)).body.ticketId as string;
    const snap = await snapshotItem(redis, qprefix, 'rq');
    expect((await q.call('DELETE', `/v1/tickets/${t}`, undefined, null)).body.state).toBe('cancelled');
    await waitFor(async () => (await qdb.sql`select 1 from ticket_outcomes where ticket_id = ${ticketRef(t)}`).length, (n) => n === 1);
    await rollbackItem(redis, qprefix, 'rq', snap);
    expect((await waitFor(() => qpoll(t), (v) => v.state === 'cancelled', 5_000)).state).toBe('cancelled');
    // Early in a fresh second of the quota (1 join a second per key): her join ends the ticket the
    // rollback brought back and takes a number again; counted twice, it was refused 429.
    await new Promise((r) => setTimeout(r, 1050 - (Date.now() % 1000)));
    const joined = await q.call('POST', '/v1/items/rq/tickets', { userId: 'kim' }, SVC);
    expect([joined.status, joined.body.ticketId === t]).toEqual([202, false]);
  });
});
