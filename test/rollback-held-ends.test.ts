import { describe, expect, it } from 'vitest';
import { ticketRef } from '../src/kernel/ticket-ref.js';
import { inProcessDaemon, recordingLogger, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { recordingDownstream } from './support/downstream.js';
import { askAgainOn503 } from './support/joins.js';
import { rollbackItem, snapshotItem, testRedis } from './support/redis.js';

/**
 * A Redis rolled back past a ticket's end (an AOF that lost its last second, a failover to a replica
 * behind) brings the ticket back waiting or admitted, while the outcome ledger holds the end its
 * user was told. Such a ticket is not handed to a worker, run, cancelled or ended otherwise again:
 * the ledger's end stands. (The rollback is played as fault-rollback.test.ts plays it.)
 */
const { redis, newPrefix } = testRedis();
const db = await testDb();
const prefix = newPrefix();
const logged = recordingLogger('warn', 100_000);
const { call } = await inProcessDaemon({
  prefix,
  databaseUrl: db.url,
  log: logged.log,
  env: { FLOODGATE_TICKET_STATE_TTL_MS: '1000', FLOODGATE_DOUBT_GRACE_MS: '500' },
});
const down = await recordingDownstream((_req, res) => (res.writeHead(200, { 'content-type': 'application/json' }), res.end('{"order":"W1"}')));

const snapshot = (itemId: string) => snapshotItem(redis, prefix, itemId);
const rollback = (itemId: string, snap: Map<string, Buffer | null>) => rollbackItem(redis, prefix, itemId, snap);
const row = async (id: string) => (await db.sql`select status, reason, result from ticket_outcomes where ticket_id = ${ticketRef(id)}`)[0];
const poll = async (id: string) => (await call('GET', `/v1/tickets/${id}`, undefined, null)).body;
// A worker's pull as a worker makes it: a 503 asked again (on a busy machine the ledger's look at
// the tickets after a rollback may miss its 200 ms, and the pull then hands out nothing: 503).
const pulled = async (itemId: string) =>
  (await askAgainOn503(() => call('POST', `/v1/items/${itemId}/pull`, { max: 5 }, SVC), [200], Date.now() + 30_000, 'pull')).body.tickets as { ticketId: string; leaseId: string }[];
/** A buyer's ticket sold (its ledger row written, the gate closed again), then Redis rolled back to before the sale. */
async function soldThenRolledBack(itemId: string, userId: string) {
  await call('PUT', `/v1/items/${itemId}`, { handler: 'seckill', config: { stock: 5 }, gate: { mode: 'closed' } });
  const t = (await call('POST', `/v1/items/${itemId}/tickets`, { userId }, SVC)).body.ticketId as string;
  const snap = await snapshot(itemId);
  await call('PATCH', `/v1/items/${itemId}/gate`, { mode: 'manual', rate: 100, maxInFlight: 5 });
  expect((await waitFor(() => poll(t), (v) => v.state === 'succeeded')).state).toBe('succeeded');
  await call('PATCH', `/v1/items/${itemId}/gate`, { mode: 'closed' });
  await waitFor(() => row(t), (r) => !!r);
  await rollback(itemId, snap);
  return t;
}

describe('a Redis rollback past an end the outcome ledger holds', () => {
  it('an external ticket a worker answered is not handed out again; its view is the answer', { timeout: 60_000 }, async () => {
    await call('PUT', '/v1/items/x1', { handler: 'external' });
    const t = (await call('POST', '/v1/items/x1/tickets', { userId: 'alice' }, SVC)).body.ticketId as string;
    const snap = await snapshot('x1');
    const [p1] = await pulled('x1');
    expect(p1.ticketId).toBe(t);
    expect((await call('POST', `/v1/tickets/${t}/outcome`, { leaseId: p1.leaseId, status: 'succeeded', result: { orderId: 'A1' } }, SVC)).status).toBe(200);
    await waitFor(() => row(t), (r) => !!r);

    await rollback('x1', snap);
    // Taken from the line again and ended with the ledger's answer, not given to another worker.
    expect(await pulled('x1')).toEqual([]);
    expect(await poll(t)).toMatchObject({ state: 'succeeded', outcome: { status: 'succeeded', result: { orderId: 'A1' } } });
    // Once the state's time in Redis is over: state and outcome still agree.
    await new Promise((r) => setTimeout(r, 2500));
    const v = await poll(t);
    expect({ state: v.state, outcome: v.outcome?.status }).toEqual({ state: 'succeeded', outcome: 'succeeded' });
    expect(await row(t)).toMatchObject({ status: 'succeeded', result: { orderId: 'A1' } });
  });

  it('an external ticket its user cancelled is not handed to a worker', { timeout: 60_000 }, async () => {
    await call('PUT', '/v1/items/x2', { handler: 'external' });
    const t = (await call('POST', '/v1/items/x2/tickets', { userId: 'bob' }, SVC)).body.ticketId as string;
    const snap = await snapshot('x2');
    expect((await call('DELETE', `/v1/tickets/${t}`, undefined, null)).body.state).toBe('cancelled');
    await waitFor(() => row(t), (r) => !!r);

    await rollback('x2', snap);
    expect(await pulled('x2')).toEqual([]);
    expect(await poll(t)).toMatchObject({ state: 'cancelled', outcome: { status: 'cancelled', reason: 'cancelled_by_user' } });
  });

  it('a user told cancelled who joins again gets a new ticket, and it is handed out', { timeout: 60_000 }, async () => {
    await call('PUT', '/v1/items/x6', { handler: 'external' });
    const t = (await call('POST', '/v1/items/x6/tickets', { userId: 'hal' }, SVC)).body.ticketId as string;
    const snap = await snapshot('x6');
    expect((await call('DELETE', `/v1/tickets/${t}`, undefined, null)).body.state).toBe('cancelled');
    await waitFor(() => row(t), (r) => !!r);
    expect((await poll(t)).state).toBe('cancelled');

    await rollback('x6', snap);
    // Once the daemon has seen the rollback, her ticket answers its cancel.
    expect((await waitFor(() => poll(t), (v) => v.state === 'cancelled', 5_000)).state).toBe('cancelled');
    const again = await call('POST', '/v1/items/x6/tickets', { userId: 'hal' }, SVC);
    expect(again.status).toBe(202);
    expect(again.body.ticketId).not.toBe(t);
    expect((await pulled('x6')).map((p) => p.ticketId)).toEqual([again.body.ticketId]);
    expect(await poll(t)).toMatchObject({ state: 'cancelled' });
  });

  it('a user told expired who joins again gets a new ticket, and the one a rollback brought back holds no place', { timeout: 60_000 }, async () => {
    // (A review: the join answered the expired ticket, 200, for as long as it waited to reach the
    // head again, and it held the line's one place: a stranger read queue_full beside it.)
    await call('PUT', '/v1/items/x8', { handler: 'external', abandonAfterMs: 3000, capacity: 1 });
    const t = (await call('POST', '/v1/items/x8/tickets', { userId: 'eve' }, SVC)).body.ticketId as string;
    const snap = await snapshot('x8');
    await new Promise((r) => setTimeout(r, 3600)); // no poll: abandoned
    expect(await pulled('x8')).toEqual([]); // the pull's admission ends it
    expect(await waitFor(() => row(t), (r) => !!r)).toMatchObject({ status: 'expired', reason: 'abandoned' });
    await rollback('x8', snap);
    expect((await waitFor(() => poll(t), (v) => v.state === 'expired', 5_000)).state).toBe('expired');
    const again = await call('POST', '/v1/items/x8/tickets', { userId: 'eve' }, SVC);
    expect(again.status).toBe(202);
    expect(again.body.ticketId).not.toBe(t);
    expect(await poll(t)).toMatchObject({ state: 'expired', outcome: { status: 'expired', reason: 'abandoned' } });
    // The line's one place is hers again (the revived ticket left it: a capacity of 1 took her new one).
    expect((await call('GET', '/v1/items/x8')).body.counts).toMatchObject({ waiting: 1 });
    expect((await pulled('x8')).map((p) => p.ticketId)).toEqual([again.body.ticketId]);
  });

  it("the polls of a ticket a rollback took keep no other ticket at its seq from being expired as abandoned", { timeout: 60_000 }, async () => {
    await call('PUT', '/v1/items/x9', { handler: 'external', abandonAfterMs: 3000 });
    const before = await snapshot('x9');
    const lost = (await call('POST', '/v1/items/x9/tickets', { userId: 'amy' }, SVC)).body.ticketId as string;
    // (Read by the daemon before the rollback, as a daemon's views are every few hundred ms in a sale.)
    await waitFor(() => call('GET', '/v1/items/x9'), (r) => r.body.counts?.waiting === 1, 5_000);
    await rollback('x9', before);
    // Another user's join takes the seq again; its holder never polls.
    const other = (await call('POST', '/v1/items/x9/tickets', { userId: 'bob' }, SVC)).body.ticketId as string;
    expect(other).not.toBe(lost);
    // The first id's holder polls on (its seq half verifies, its binding no longer matches anything;
    // 200 from the daemon's cache until it has seen the rollback).
    await waitFor(() => call('GET', `/v1/tickets/${lost}`, undefined, null), (r) => r.status === 404, 5_000);
    const until = Date.now() + 3600;
    while (Date.now() < until) {
      const r = await call('GET', `/v1/tickets/${lost}`, undefined, null);
      expect(r.status, JSON.stringify(r.body)).toBe(404);
      await new Promise((r) => setTimeout(r, 300));
    }
    expect(await pulled('x9')).toEqual([]); // before: handed out, its abandonment put off by another's polls
    expect((await waitFor(() => poll(other), (v) => v.state === 'expired')).outcome).toMatchObject({ status: 'expired', reason: 'abandoned' });
  });

  it("a user told cancelled who joins again is counted once against the item's quota", { timeout: 60_000 }, async () => {
    await call('PUT', '/v1/items/x7', { handler: 'external', quotas: { perUser: { limit: 2, windowMs: 600_000 } } });
    const t = (await call('POST', '/v1/items/x7/tickets', { userId: 'ivy' }, SVC)).body.ticketId as string;
    const snap = await snapshot('x7'); // her join counted: 1 of 2
    expect((await call('DELETE', `/v1/tickets/${t}`, undefined, null)).body.state).toBe('cancelled');
    await waitFor(() => row(t), (r) => !!r);
    await rollback('x7', snap);
    expect((await waitFor(() => poll(t), (v) => v.state === 'cancelled', 5_000)).state).toBe('cancelled');
    // Her second join of the window: the script runs twice for it (the revived ticket ended, then
    // the join), and counted it twice it answered 429.
    const again = await call('POST', '/v1/items/x7/tickets', { userId: 'ivy' }, SVC);
    expect(again.status).toBe(202);
  });

  it("a user told cancelled who joins again over the item's quota is refused, as without the rollback", { timeout: 60_000 }, async () => {
    // (An own-commits review: the revived ticket answered the over-quota join, and ending it made a
    // new ticket by a second call that counts no quota: 202 where 429 was due.)
    await call('PUT', '/v1/items/x9', { handler: 'external', quotas: { perUser: { limit: 1, windowMs: 600_000 } } });
    const t = (await call('POST', '/v1/items/x9/tickets', { userId: 'ivy' }, SVC)).body.ticketId as string;
    const snap = await snapshot('x9'); // her join counted: 1 of 1
    expect((await call('DELETE', `/v1/tickets/${t}`, undefined, null)).body.state).toBe('cancelled');
    await waitFor(() => row(t), (r) => !!r);
    await rollback('x9', snap);
    expect((await waitFor(() => poll(t), (v) => v.state === 'cancelled', 5_000)).state).toBe('cancelled');
    const again = await call('POST', '/v1/items/x9/tickets', { userId: 'ivy' }, SVC);
    expect([again.status, again.body.error?.code]).toEqual([429, 'rate_limited']);
    expect(await poll(t)).toMatchObject({ state: 'cancelled' });
    expect((await pulled('x9')).length).toBe(0); // the revived ticket is not handed out either
  });

  it("a winner whose order was released, over the item's quota, is refused on joining again, as without the rollback", { timeout: 60_000 }, async () => {
    // (A review: Redis rolled back past the release's Redis step, the join made a new ticket by the
    // second call, which counts no quota: 202 where 429 was due.)
    await call('PUT', '/v1/items/x10', { handler: 'seckill', config: { stock: 1, reserveMs: 600_000 }, quotas: { perUser: { limit: 1, windowMs: 600_000 } } });
    const t = (await call('POST', '/v1/items/x10/tickets', { userId: 'amy' }, SVC)).body.ticketId as string;
    const won = await waitFor(() => poll(t), (v) => v.state === 'succeeded');
    const snap = await snapshot('x10');
    expect((await call('POST', `/v1/orders/${won.outcome.result.orderId}/release`, undefined, SVC)).status).toBe(200);
    await waitFor(() => db.sql`select returned_at from orders where order_id = ${won.outcome.result.orderId}`.then(([r]) => r?.returned_at ?? null), (at) => at !== null);
    await rollback('x10', snap);
    const again = await call('POST', '/v1/items/x10/tickets', { userId: 'amy' }, SVC);
    expect([again.status, again.body.error?.code]).toEqual([429, 'rate_limited']);
  });

  it('a webhook ticket its user cancelled is not called', { timeout: 60_000 }, async () => {
    await call('PUT', '/v1/items/x3', { handler: 'webhook', config: { url: down.url }, gate: { mode: 'closed' } });
    const t = (await call('POST', '/v1/items/x3/tickets', { userId: 'carol' }, SVC)).body.ticketId as string;
    const other = (await call('POST', '/v1/items/x3/tickets', { userId: 'dan' }, SVC)).body.ticketId as string;
    const snap = await snapshot('x3');
    expect((await call('DELETE', `/v1/tickets/${t}`, undefined, null)).body.state).toBe('cancelled');
    await waitFor(() => row(t), (r) => !!r);

    await rollback('x3', snap);
    await call('PATCH', '/v1/items/x3/gate', { mode: 'manual', rate: 100, maxInFlight: 5 });
    // Dan, behind her, is called: the line moved past her ticket.
    expect((await waitFor(() => poll(other), (v) => v.state === 'succeeded', 15_000)).state).toBe('succeeded');
    const v = await waitFor(() => poll(t), (v) => v.state !== 'waiting' && v.state !== 'admitted');
    expect(v).toMatchObject({ state: 'cancelled', outcome: { reason: 'cancelled_by_user' } });
    expect(down.seen.map((c) => JSON.parse(c.body).userId)).toEqual(['dan']);
  });

  it('a seckill ticket its user cancelled ends cancelled, not failed, when it reaches the head again (its sale is refused)', { timeout: 60_000 }, async () => {
    await call('PUT', '/v1/items/x5', { handler: 'seckill', config: { stock: 5 }, gate: { mode: 'closed' } });
    const t = (await call('POST', '/v1/items/x5/tickets', { userId: 'fay' }, SVC)).body.ticketId as string;
    const snap = await snapshot('x5');
    expect((await call('DELETE', `/v1/tickets/${t}`, undefined, null)).body.state).toBe('cancelled');
    await waitFor(() => row(t), (r) => !!r);

    await rollback('x5', snap);
    await call('PATCH', '/v1/items/x5/gate', { mode: 'manual', rate: 100, maxInFlight: 5 });
    const v = await waitFor(() => poll(t), (v) => v.state !== 'waiting' && v.state !== 'admitted');
    expect(v).toMatchObject({ state: 'cancelled', outcome: { reason: 'cancelled_by_user' } });
    expect((await db.sql`select count(*)::int as n from orders where item_id = 'x5'`)[0].n).toBe(0);
  });

  it('an external ticket in doubt ends with the worker answer the ledger holds, not the close', { timeout: 60_000 }, async () => {
    await call('PUT', '/v1/items/x4', { handler: 'external' });
    const t = (await call('POST', '/v1/items/x4/tickets', { userId: 'dave' }, SVC)).body.ticketId as string;
    const [p1] = (await call('POST', '/v1/items/x4/pull', { max: 1, leaseMs: 1000 }, SVC)).body.tickets;
    const snap = await snapshot('x4');
    expect((await call('POST', `/v1/tickets/${t}/outcome`, { leaseId: p1.leaseId, status: 'succeeded', result: { orderId: 'D1' } }, SVC)).status).toBe(200);
    await waitFor(() => row(t), (r) => !!r);

    // Back admitted under its (running-out) lease; the item closes; the lease runs out: in doubt.
    await rollback('x4', snap);
    expect((await call('DELETE', '/v1/items/x4')).status).toBeLessThan(300);
    const v = await waitFor(() => poll(t), (v) => v.state !== 'admitted' && v.state !== 'waiting', 15_000);
    expect(v).toMatchObject({ state: 'succeeded', outcome: { result: { orderId: 'D1' } } });
  });

  it('a buyer told succeeded is not told waiting, with a place, after the rollback (the gate closed: the line does not reach the ticket)', { timeout: 60_000 }, async () => {
    const t = await soldThenRolledBack('s2', 'gus');
    // (The daemon sees the item's counters go back at its next read of the item.)
    const v = await waitFor(() => poll(t), (v) => v.state === 'succeeded', 5_000);
    expect(v).toMatchObject({ state: 'succeeded', outcome: { status: 'succeeded' } });
  });

  it('a buyer whose order the ledger holds cannot cancel the ticket a rollback brought back', { timeout: 60_000 }, async () => {
    const t = await soldThenRolledBack('s1', 'erin');
    const del = await call('DELETE', `/v1/tickets/${t}`, undefined, null);
    expect({ status: del.status, code: del.body.error?.code }).toEqual({ status: 409, code: 'not_cancellable' });
    // Her sale is not voided: it stands, and a run of the ticket again answers her order.
    expect((await db.sql`select count(*)::int as n from voided_tickets where ticket_id = ${ticketRef(t)}`)[0].n).toBe(0);
    await call('PATCH', '/v1/items/s1/gate', { mode: 'manual', rate: 100, maxInFlight: 5 });
    const v = await waitFor(() => poll(t), (v) => v.state !== 'waiting' && v.state !== 'admitted');
    expect(v).toMatchObject({ state: 'succeeded' });
    expect((await db.sql`select count(*)::int as n from orders where item_id = 's1'`)[0].n).toBe(1);
  });

  it('a buyer is told succeeded once the ledger answers, when it did not in time at the first poll after the rollback', { timeout: 60_000 }, async () => {
    const t = await soldThenRolledBack('s3', 'hal');
    // The ledger's table held (a slow Postgres): the look at the ticket's end gives up after 1 s.
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let locked!: () => void;
    const isLocked = new Promise<void>((r) => (locked = r));
    const tx = db.sql.begin(async (sql) => {
      await sql`lock table ticket_outcomes in access exclusive mode`;
      locked();
      await held;
    });
    await isLocked;
    try {
      // Polled while the ledger does not answer: `waiting` (Redis's word), until the daemon has seen the rollback and asked.
      const slow = async () => {
        const at = performance.now();
        const v = await poll(t);
        return { v, ms: performance.now() - at };
      };
      const asked = await waitFor(slow, (r) => r.ms >= 900, 15_000);
      expect(asked.v.state).toBe('waiting');
      release();
      await tx;
      // Before: that unanswered look counted as the one look, and the ticket read `waiting` from the cache for good.
      expect((await waitFor(() => poll(t), (v) => v.state === 'succeeded', 5_000)).state).toBe('succeeded');
    } finally {
      release();
      await tx;
    }
  });
});
