import { describe, expect, it } from 'vitest';
import { inProcessDaemon, recordingLogger, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { recordingDownstream } from './support/downstream.js';
import { rollbackItem, snapshotItem, testRedis } from './support/redis.js';

const { redis, newPrefix } = testRedis();
const db = await testDb();
const prefix = newPrefix();
const logged = recordingLogger('warn', 100_000);
const { call } = await inProcessDaemon({ prefix, databaseUrl: db.url, log: logged.log });
/** A webhook downstream that holds every call until the test answers it, with whom it was for. */
const holding = new Map<string, () => void>();
const down = await recordingDownstream((req, res) => {
  const user = (JSON.parse(req.body) as { userId: string }).userId;
  holding.set(user, () => (res.writeHead(200, { 'content-type': 'application/json' }), res.end(JSON.stringify({ for: user }))));
});

const snapshot = (itemId: string) => snapshotItem(redis, prefix, itemId);
const rollback = (itemId: string, snap: Map<string, Buffer | null>) => rollbackItem(redis, prefix, itemId, snap);

const settled = (ids: string[]) =>
  waitFor(
    () => Promise.all(ids.map((id) => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body))),
    (vs) => vs.every((v) => v.state === 'succeeded' || v.state === 'rejected'),
  );

describe('a Redis rollback of an item', () => {
  it("never gives a user another user's ticket or order, and the counter comes back to what Postgres says", { timeout: 60_000 }, async () => {
    await call('PUT', '/v1/items/rb', { handler: 'seckill', config: { stock: 5 }, gate: { mode: 'closed' } });
    const snap = await snapshot('rb');
    const alice = (await call('POST', '/v1/items/rb/tickets', { userId: 'alice' }, SVC)).body.ticketId as string;
    const carol = (await call('POST', '/v1/items/rb/tickets', { userId: 'carol' }, SVC)).body.ticketId as string;
    await call('PATCH', '/v1/items/rb/gate', { mode: 'manual' });
    const first = await settled([alice, carol]);
    expect(first.map((v) => v.state)).toEqual(['succeeded', 'succeeded']);

    // The rollback forgets both tickets and rewinds the seq counter (and the gate to closed).
    await rollback('rb', snap);
    await waitFor(() => call('GET', '/v1/items/rb').then((r) => r.body), (v) => v.counts.succeeded === 0);
    const bob = (await call('POST', '/v1/items/rb/tickets', { userId: 'bob' }, SVC)).body.ticketId as string;
    const dave = (await call('POST', '/v1/items/rb/tickets', { userId: 'dave' }, SVC)).body.ticketId as string;
    // The same seqs again, but never the same ids: a lost id names nobody else's ticket.
    expect([bob, dave]).not.toContain(alice);
    expect([bob, dave]).not.toContain(carol);
    // A lost id is answered with its own ticket's end, which Postgres holds (never bob's or dave's
    // ticket), and is not cancellable.
    for (const [lost, user, i] of [[alice, 'alice', 0], [carol, 'carol', 1]] as const) {
      expect((await call('GET', `/v1/tickets/${lost}`, undefined, null)).body).toMatchObject({ ticketId: lost, userId: user, state: 'succeeded', outcome: first[i].outcome });
      expect((await call('DELETE', `/v1/tickets/${lost}`, undefined, null)).status).toBe(409);
    }
    expect((await call('GET', `/v1/tickets/${bob}`, undefined, null)).body).toMatchObject({ userId: 'bob', state: 'waiting' });

    await call('PATCH', '/v1/items/rb/gate', { mode: 'manual' });
    const second = await settled([bob, dave]);
    expect(second.map((v) => [v.userId, v.state])).toEqual([['bob', 'succeeded'], ['dave', 'succeeded']]);
    const orders = await db.sql`select order_id::text as id, user_id from orders where item_id = 'rb'`;
    const owner = new Map(orders.map((o) => [o.id, o.user_id]));
    for (const v of [...first, ...second]) expect(owner.get(v.outcome.result.orderId)).toBe(v.userId);
    expect(orders.length).toBe(4);

    // The rolled-back counter said 5 left; once quiet it says what Postgres says: 1.
    const item = await waitFor(() => call('GET', '/v1/items/rb').then((r) => r.body), (v) => v.remaining === 1);
    expect(item.remaining).toBe(1);
    const [{ sold, total }] = await db.sql`select sold, total from item_stock where item_id = 'rb'`;
    expect(sold + item.remaining).toBe(total);
  });

  it("a job in flight across the rollback never ends the ticket that took its seq with its own user's answer", { timeout: 60_000 }, async () => {
    await call('PUT', '/v1/items/rw', { handler: 'webhook', config: { url: down.url, timeoutMs: 30_000 }, gate: { mode: 'closed' } });
    const snap = await snapshot('rw');
    const alice = (await call('POST', '/v1/items/rw/tickets', { userId: 'alice' }, SVC)).body.ticketId as string;
    await call('PATCH', '/v1/items/rw/gate', { mode: 'manual', rate: 100, maxInFlight: 5 });
    await waitFor(() => Promise.resolve(holding.has('alice')), (v) => v);
    expect(holding.has('alice')).toBe(true);

    // Redis comes back from before alice's join while her call is under way; bob takes her seq.
    await rollback('rw', snap);
    const bob = (await call('POST', '/v1/items/rw/tickets', { userId: 'bob' }, SVC)).body.ticketId as string;
    await call('PATCH', '/v1/items/rw/gate', { mode: 'manual', rate: 100, maxInFlight: 5 });
    await waitFor(() => Promise.resolve(holding.has('bob')), (v) => v);
    expect(holding.has('bob')).toBe(true);

    // Alice's call answers: her job's settle names a ticket that is not there any more.
    holding.get('alice')!();
    const refused = await waitFor(() => Promise.resolve(logged.lines()), (l) => l.includes('job outcome not settled'));
    expect(refused).toContain('ticket_not_found');
    // (A poll may be answered from a view a moment old: `waiting`, until it is refreshed.)
    const mid = await waitFor(() => call('GET', `/v1/tickets/${bob}`, undefined, null).then((r) => r.body), (v) => v.state !== 'waiting');
    // (Before: bob's ticket ended `succeeded` with alice's answer here.)
    expect(mid).toMatchObject({ userId: 'bob', state: 'admitted' });

    holding.get('bob')!();
    const end = await waitFor(() => call('GET', `/v1/tickets/${bob}`, undefined, null).then((r) => r.body), (v) => v.state === 'succeeded');
    expect(end).toMatchObject({ userId: 'bob', state: 'succeeded', outcome: { result: { for: 'bob' } } });
    expect(alice).not.toBe(bob);
  });
});
