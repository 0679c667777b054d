import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { startRetention } from '../src/catalog/retention.js';
import { createLogger } from '../src/kernel/logger.js';
import { ticketRef } from '../src/kernel/ticket-ref.js';
import { testApp } from './support/app.js';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { keysMatching, testRedis } from './support/redis.js';
import { ownRedis } from './support/redis-server.js';

/**
 * Ticket ids whose state Redis lost (a flush, a rollback) or removed (retention) are answered
 * from what Postgres holds of them (ticket_outcomes, else the order or claim), never with another
 * user's ticket, and a forged id still costs no Postgres query.
 */

// Stores made at the top (their clean-up runs after the file).
const redisServer = await ownRedis();
const flushDb = await testDb();
const rollbackDb = await testDb();
const t = await testApp();
// Prefixes on the shared Redis that are unlinked after the file (the daemons' keys: 16-21 each were left behind).
const shared = testRedis();

const poll = (call: (m: string, p: string, b?: unknown, k?: string | null) => Promise<{ status: number; body: any }>, id: string) => call('GET', `/v1/tickets/${id}`, undefined, null);
const ended = (call: Parameters<typeof poll>[0], ids: string[]) =>
  waitFor(
    () => Promise.all(ids.map((id) => poll(call, id).then((r) => r.body))),
    (vs) => vs.every((v) => v && v.state !== 'waiting' && v.state !== 'admitted'),
  );

describe('after Redis comes back empty', () => {
  it('answers every ticket Postgres holds the end of with that end, and the others 404', { timeout: 90_000 }, async () => {
    const db = flushDb;
    const { call } = await inProcessDaemon({ prefix: `fgl:${randomBytes(4).toString('hex')}:`, databaseUrl: db.url, env: { REDIS_URL: redisServer.url } });
    const join = (item: string, userId: string) => call('POST', `/v1/items/${item}/tickets`, { userId }, SVC).then((r) => r.body.ticketId as string);

    // sku: 5 units, a and b buy (seqs 1, 2); one: 1 unit, x buys and y is refused; line: a waiting ticket.
    expect((await call('PUT', '/v1/items/sku', { handler: 'seckill', config: { stock: 5 }, gate: { mode: 'closed' } })).status).toBe(201);
    expect((await call('PUT', '/v1/items/one', { handler: 'seckill', config: { stock: 1 }, gate: { mode: 'closed' } })).status).toBe(201);
    expect((await call('PUT', '/v1/items/line', { handler: 'seckill', config: { stock: 5 }, gate: { mode: 'closed' } })).status).toBe(201);
    const a = await join('sku', 'a');
    const b = await join('sku', 'b');
    const x = await join('one', 'x');
    const y = await join('one', 'y');
    const w = await join('line', 'w');
    // hot: split into 4 sub-lines (ids name their sub-line), 3 units for 5 users.
    expect((await call('PUT', '/v1/items/hot', { handler: 'seckill', config: { stock: 3 }, lines: 4, gate: { mode: 'closed' } })).status).toBe(201);
    const hot = [];
    for (let i = 0; i < 5; i++) hot.push(await join('hot', `h${i}`));
    await call('PATCH', '/v1/items/sku/gate', { mode: 'manual' });
    await call('PATCH', '/v1/items/one/gate', { mode: 'manual', maxInFlight: 1 });
    await call('PATCH', '/v1/items/hot/gate', { mode: 'manual' });
    const hotBefore = await ended(call, hot);
    expect(hotBefore.filter((v) => v.state === 'succeeded').length).toBe(3);
    await waitFor(() => db.sql`select 1 from ticket_outcomes where item_id = 'hot'`, (r) => r.length === 5);
    const before = await ended(call, [a, b, x, y]);
    expect(before.map((v) => [v.userId, v.state])).toEqual([['a', 'succeeded'], ['b', 'succeeded'], ['x', 'succeeded'], ['y', 'rejected']]);
    // Every outcome is in the ledger; b's row is then taken away: a sale whose ledger entry the
    // loss took before it was written (only its order is in Postgres).
    await waitFor(() => db.sql`select 1 from ticket_outcomes where user_id in ('a', 'b', 'x', 'y')`, (r) => r.length === 4);
    await db.sql`delete from ticket_outcomes where ticket_id = ${ticketRef(b)}`;
    const orders = new Map((await db.sql`select user_id, order_id::text as id from orders where item_id in ('sku', 'one')`).map((r) => [r.user_id as string, r.id as string]));

    const admin = new Redis(redisServer.url);
    await admin.flushall();
    admin.disconnect();
    // The daemon makes the items again from Postgres (within a second of the loss).
    await waitFor(() => call('GET', '/v1/items/sku'), (r) => r.status === 200 && r.body.counts.succeeded === 0);

    const [va, vb, vx, vy] = await Promise.all([a, b, x, y].map((id) => poll(call, id)));
    expect(va).toMatchObject({ status: 200, body: { ticketId: a, userId: 'a', itemId: 'sku', state: 'succeeded', outcome: { status: 'succeeded', result: { orderId: orders.get('a') } } } });
    expect(vb).toMatchObject({ status: 200, body: { ticketId: b, userId: 'b', state: 'succeeded', outcome: { status: 'succeeded', result: { orderId: orders.get('b') } } } });
    expect(vx).toMatchObject({ status: 200, body: { userId: 'x', state: 'succeeded', outcome: { result: { orderId: orders.get('x') } } } });
    expect(vy).toMatchObject({ status: 200, body: { userId: 'y', state: 'rejected', outcome: { status: 'rejected', reason: 'sold_out' } } });
    // The same outcome as before the loss, times and all.
    expect(va.body).toEqual(expect.objectContaining({ createdAt: before[0].createdAt, outcome: before[0].outcome }));
    await waitFor(() => call('GET', '/v1/items/hot'), (r) => r.status === 200);
    const hotAfter = await Promise.all(hot.map((id) => poll(call, id)));
    expect(hotAfter.map((r) => [r.status, r.body.userId, r.body.state, r.body.outcome])).toEqual(hotBefore.map((v) => [200, v.userId, v.state, v.outcome]));
    // The waiting ticket: Postgres holds nothing of it.
    expect((await poll(call, w)).status).toBe(404);
    // An ended ticket is not cancellable; its event stream tells its end and closes.
    expect((await call('DELETE', `/v1/tickets/${a}`, undefined, null)).body.error.code).toBe('not_cancellable');
    const events = await call('GET', `/v1/tickets/${a}/events`, undefined, null);
    expect(events.status).toBe(200);
    expect(String(events.body)).toContain('"state":"succeeded"');

    // New users take the same seqs again: each id names its own ticket, never the other's.
    const n1 = await join('sku', 'n1');
    const n2 = await join('sku', 'n2');
    const nw = await join('line', 'nw');
    expect([n1, n2]).not.toContain(a);
    expect([n1, n2]).not.toContain(b);
    expect(n1.split('.')[1]).toBe(a.split('.')[1]);
    expect((await poll(call, nw)).body).toMatchObject({ userId: 'nw', state: 'waiting' });
    expect((await poll(call, w)).status).toBe(404);
    await call('PATCH', '/v1/items/sku/gate', { mode: 'manual' });
    const after = await ended(call, [n1, n2]);
    expect(after.map((v) => [v.userId, v.state])).toEqual([['n1', 'succeeded'], ['n2', 'succeeded']]);
    expect((await poll(call, a)).body).toMatchObject({ userId: 'a', outcome: { result: { orderId: orders.get('a') } } });
    expect((await poll(call, b)).body).toMatchObject({ userId: 'b', outcome: { result: { orderId: orders.get('b') } } });
    const owners = new Map((await db.sql`select order_id::text as id, user_id from orders where item_id = 'sku'`).map((r) => [r.id as string, r.user_id as string]));
    for (const v of after) expect(owners.get(v.outcome.result.orderId)).toBe(v.userId);
  });
});

describe('a Redis rollback of an item', () => {
  it('answers an id issued in the lost seconds with its own sale, and never the ticket its seq went to', { timeout: 60_000 }, async () => {
    const db = rollbackDb;
    const prefix = shared.newPrefix();
    const { call } = await inProcessDaemon({ prefix, databaseUrl: db.url });
    const redis = t.redis;
    const keysOf = (itemId: string) => keysMatching(redis, `${prefix}{${itemId}}:*`);
    await call('PUT', '/v1/items/rb', { handler: 'seckill', config: { stock: 5 }, gate: { mode: 'closed' } });
    const snap = new Map(await Promise.all((await keysOf('rb')).map(async (k) => [k, await redis.dumpBuffer(k)] as const)));
    const alice = (await call('POST', '/v1/items/rb/tickets', { userId: 'alice' }, SVC)).body.ticketId as string;
    const carol = (await call('POST', '/v1/items/rb/tickets', { userId: 'carol' }, SVC)).body.ticketId as string;
    await call('PATCH', '/v1/items/rb/gate', { mode: 'manual' });
    expect((await ended(call, [alice, carol])).map((v) => v.state)).toEqual(['succeeded', 'succeeded']);
    await waitFor(() => db.sql`select 1 from ticket_outcomes where item_id = 'rb'`, (r) => r.length === 2);
    // Carol's ledger row lost with the rolled-back seconds (only her order is in Postgres).
    await db.sql`delete from ticket_outcomes where ticket_id = ${ticketRef(carol)}`;
    const orders = new Map((await db.sql`select user_id, order_id::text as id from orders where item_id = 'rb'`).map((r) => [r.user_id as string, r.id as string]));

    for (const k of await keysOf('rb')) if (!snap.has(k)) await redis.del(k);
    for (const [k, v] of snap) if (v) await redis.restore(k, 0, v, 'REPLACE');
    await waitFor(() => call('GET', '/v1/items/rb').then((r) => r.body), (v) => v.counts.succeeded === 0);
    const bob = (await call('POST', '/v1/items/rb/tickets', { userId: 'bob' }, SVC)).body.ticketId as string;
    const dave = (await call('POST', '/v1/items/rb/tickets', { userId: 'dave' }, SVC)).body.ticketId as string;
    expect(bob.split('.')[1]).toBe(alice.split('.')[1]);
    expect([bob, dave]).not.toContain(alice);

    for (const [id, user] of [[alice, 'alice'], [carol, 'carol']] as const) {
      const v = await poll(call, id);
      expect(v).toMatchObject({ status: 200, body: { ticketId: id, userId: user, state: 'succeeded', outcome: { result: { orderId: orders.get(user) } } } });
      expect((await call('DELETE', `/v1/tickets/${id}`, undefined, null)).status).toBe(409);
    }
    // Bob's and dave's tickets are theirs, waiting, untouched by the DELETEs of the lost ids.
    expect((await poll(call, bob)).body).toMatchObject({ userId: 'bob', state: 'waiting' });
    expect((await poll(call, dave)).body).toMatchObject({ userId: 'dave', state: 'waiting' });
    await call('PATCH', '/v1/items/rb/gate', { mode: 'manual' });
    const second = await ended(call, [bob, dave]);
    expect(second.map((v) => [v.userId, v.state])).toEqual([['bob', 'succeeded'], ['dave', 'succeeded']]);
    expect((await poll(call, alice)).body).toMatchObject({ userId: 'alice', outcome: { result: { orderId: orders.get('alice') } } });
  });
});

describe('ids Redis does not hold', () => {
  it("answer an item's tickets from Postgres once retention removed the item, and a forged or random id costs no Postgres query", { timeout: 60_000 }, async () => {
    const prefix = shared.newPrefix();
    const { call } = await inProcessDaemon({ prefix, databaseUrl: t.db.url });
    // Another daemon's modules on the same stores: its retention, and its ticket reader started after the removal.
    const other = t.build({ prefix });

    expect((await call('PUT', '/v1/items/arch', { handler: 'seckill', config: { stock: 1 } })).status).toBe(201);
    const u1 = (await call('POST', '/v1/items/arch/tickets', { userId: 'u1' }, SVC)).body.ticketId as string;
    const u2 = (await call('POST', '/v1/items/arch/tickets', { userId: 'u2' }, SVC)).body.ticketId as string;
    const live = await ended(call, [u1, u2]);
    expect(live.map((v) => [v.userId, v.state])).toEqual([['u1', 'succeeded'], ['u2', 'rejected']]);
    await waitFor(() => t.db.sql`select 1 from ticket_outcomes where item_id = 'arch'`, (r) => r.length === 2);

    const retention = startRetention({ queue: other.queue, store: other.store, clock: other.clock, log: createLogger('silent') }, { everyMs: 3_600_000, retentionMs: 0 });
    try {
      await waitFor(
        () => retention.round().then(() => other.queue.items.item('arch', { fresh: true })),
        (i) => i === null,
      );
    } finally {
      await retention.stop();
    }
    expect(await other.queue.items.item('arch', { fresh: true })).toBeNull();
    const [order] = await t.db.sql`select order_id::text as id from orders where item_id = 'arch'`;

    // The daemon that served the item, and one that learns the secret from Postgres only.
    const answers = async (ask: typeof call) => {
      const got = await waitFor(() => poll(ask, u1), (r) => r.status === 200, 5000);
      expect(got).toMatchObject({ status: 200, body: { ticketId: u1, itemId: 'arch', userId: 'u1', state: 'succeeded', outcome: { result: { orderId: order.id } } } });
      expect((await poll(ask, u2)).body).toMatchObject({ userId: 'u2', state: 'rejected', outcome: { reason: 'sold_out' } });
    };
    await answers(call);
    await other.lostTickets.load();
    await answers(other.call);

    // Forged and random ids: 404, and not one Postgres query (the seq half fails in memory).
    const asked = other.lostTickets.queries;
    const [itemPart, seqPart, tag] = u1.split('.');
    const flip = (s: string) => (s[0] === 'A' ? 'B' : 'A') + s.slice(1);
    const forged = [
      `${itemPart}.${seqPart}.${flip(tag)}`, // the seq half changed
      `${itemPart}.${(Number.parseInt(seqPart, 36) + 1).toString(36)}.${tag}`, // another seq
      `${itemPart}.1.${randomBytes(16).toString('base64url').slice(0, 22)}`, // random tag
      `${Buffer.from('nope').toString('base64url')}.1.${tag}`, // no such item
      randomBytes(20).toString('hex'), // not an id at all
    ];
    for (const id of forged) {
      expect((await poll(other.call, id)).status).toBe(404);
      expect((await other.call('DELETE', `/v1/tickets/${id}`, undefined, null)).status).toBe(404);
    }
    expect(other.lostTickets.queries).toBe(asked);
    // A live item's forged ids too.
    await other.call('PUT', '/v1/items/live', { handler: 'seckill', config: { stock: 1 }, gate: { mode: 'closed' } });
    const mine = (await other.call('POST', '/v1/items/live/tickets', { userId: 'm' }, 'svc-key-test')).body.ticketId as string;
    const [li, ls, lt] = mine.split('.');
    for (const id of [`${li}.${ls}.${flip(lt)}`, `${li}.${(Number.parseInt(ls, 36) + 7).toString(36)}.${lt}`]) expect((await poll(other.call, id)).status).toBe(404);
    expect(other.lostTickets.queries).toBe(asked);
    // A real id answered from Postgres is read once, then from memory.
    const fresh = t.build({ prefix });
    await fresh.lostTickets.load();
    for (let i = 0; i < 3; i++) expect((await poll(fresh.call, u1)).status).toBe(200);
    expect(fresh.lostTickets.queries).toBe(1);
    // One holder varying the binding half of a real id gets a few lookups per seq, not one per try.
    const varied = Array.from({ length: 20 }, () => `${itemPart}.${seqPart}.${tag.slice(0, 11)}${randomBytes(9).toString('base64url').slice(0, 11)}`);
    for (const id of varied) expect((await poll(fresh.call, id)).status).toBe(404);
    expect(fresh.lostTickets.queries).toBeLessThanOrEqual(1 + 4);
  });
});
