import { createConnection } from 'node:net';
import { describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { redisUrl, testRedis, unlinkPrefix } from './support/redis.js';
import { createEndedUsers } from '../src/queue/ended-users.js';
import { itemKeys } from '../src/redis/keys.js';

const { redis, newPrefix } = testRedis();
const db = await testDb();
const prefix = newPrefix();
const { call } = await inProcessDaemon({ prefix, databaseUrl: db.url });
// A second daemon on the same Redis and Postgres (daemons share the line).
const other = await inProcessDaemon({ prefix, databaseUrl: db.url });

/**
 * Counts the script calls on one item that name one of `users` (their joins) while `fn` runs
 * (MONITOR on a plain socket, by key prefix; the item's other scripts — its view's refresh, the
 * loops — name no user).
 */
async function joinScriptsFor(itemId: string, users: string[], fn: () => Promise<void>): Promise<number> {
  const url = new URL(redisUrl());
  const needle = `"${prefix}{${itemId}}:`;
  let calls = 0;
  let rest = '';
  const monitor = createConnection(Number(url.port || 6379), url.hostname);
  monitor.setEncoding('utf8');
  monitor.on('data', (chunk: string) => {
    const lines = (rest + chunk).split('\n');
    rest = lines.pop()!;
    for (const l of lines) if (/"evalsha"|"eval"/i.test(l) && l.includes(needle) && users.some((u) => l.includes(`"${u}"`))) calls++;
  });
  await new Promise<void>((r) => monitor.once('connect', () => r()));
  monitor.write('MONITOR\r\n');
  await new Promise<void>((r) => monitor.once('data', () => r())); // +OK: watching
  try {
    await fn();
    // A last command of our own marks the end of what the daemon sent during fn.
    const done = new Promise<void>((r) => monitor.on('data', (c: string) => c.includes('ended-users-mark') && r()));
    const mark = createConnection(Number(url.port || 6379), url.hostname);
    mark.write('PING ended-users-mark\r\n');
    await done;
    mark.destroy();
  } finally {
    monitor.destroy();
  }
  return calls;
}

const join = (itemId: string, userId: string) => call('POST', `/v1/items/${itemId}/tickets`, { userId }, SVC);
/**
 * Joins strangers to an ended item, one at a time, each answer checked, until one costs no join
 * script (the item's users have been read); the script calls of the last one (0 unless time ran out).
 */
async function strangersUntilFromMemory(itemId: string, check: (r: Awaited<ReturnType<typeof join>>) => void): Promise<number> {
  let n = 0;
  return waitFor(
    () => {
      const u = `${itemId}-stranger-${++n}`;
      return joinScriptsFor(itemId, [u], async () => check(await join(itemId, u)));
    },
    (c) => c === 0,
    10_000,
  );
}
const settled = (ids: string[]) =>
  waitFor(
    () => Promise.all(ids.map((id) => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body))),
    (vs) => vs.every((v) => v.state === 'succeeded' || v.state === 'rejected'),
  );

describe('joins to an ended item', () => {
  it("refuses users the item never knew, and those its sell-out ended, from memory; still gives every holder their ticket, across a restock", async () => {
    await call('PUT', '/v1/items/end-1', { handler: 'seckill', config: { stock: 2 }, gate: { mode: 'closed' } });
    const first = await Promise.all(['u1', 'u2', 'u3', 'u4'].map((u) => join('end-1', u)));
    for (const j of first) expect(j.status).toBe(202);
    expect((await call('PATCH', '/v1/items/end-1/gate', { mode: 'auto' })).status).toBe(200);
    const views = await settled(first.map((j) => j.body.ticketId));
    const won = views.filter((v) => v.state === 'succeeded').map((v) => v.userId);
    const lost = views.filter((v) => v.state === 'rejected').map((v) => v.userId);
    expect(won.length).toBe(2);
    await waitFor(() => call('GET', '/v1/items/end-1'), (r) => r.body.state === 'sold_out');

    // The first stranger's refusal comes from the join script, and starts reading the item's users.
    const fromScript = await join('end-1', 'stranger-0');
    expect(fromScript.status).toBe(410);
    // Once they are read (waited on: a stranger's join that calls no script), strangers cost no script call.
    const calls = await strangersUntilFromMemory('end-1', (r) => expect(r.body).toEqual(fromScript.body));
    expect(calls).toBe(0);
    let answers: unknown[] = [];
    const crowdIds = Array.from({ length: 20 }, (_, i) => `crowd-${i}`);
    const crowd = async () => {
      const rs = await Promise.all(crowdIds.map((u) => join('end-1', u)));
      answers = rs.map((r) => ({ status: r.status, body: r.body }));
      expect(answers).toEqual(Array(20).fill({ status: 410, body: fromScript.body }));
    };
    // Asked until a crowd costs no script (they stay strangers: a refusal adds no user). Right after
    // a sell-out the stock keepers' one reconcile of the item reads it again (and may announce a
    // corrected counter), which sends the joins of that moment to the script, as it should; it
    // had made this assertion fail about one run in five when it landed on the crowd.
    expect(await waitFor(() => joinScriptsFor('end-1', crowdIds, crowd), (c) => c === 0, 10_000)).toBe(0);
    // Users whose ticket the sell-out ended while it waited hold nothing either: refused from memory too.
    // Asked until they cost no script, as the crowd (the keeper's reconcile may land on them instead).
    let lostAgain: unknown[] = [];
    const askLost = async () => {
      lostAgain = await Promise.all(lost.map((u) => join('end-1', u).then((r) => r.body)));
      expect(lostAgain).toEqual([fromScript.body, fromScript.body]);
    };
    expect(await waitFor(() => joinScriptsFor('end-1', lost, askLost), (c) => c === 0, 10_000)).toBe(0);
    // A winner may hold a sale: the script answers them, with their ticket.
    let winners = 0;
    for (const u of won) {
      winners += await joinScriptsFor('end-1', [u], async () => {
        const again = await join('end-1', u);
        expect(again.status).toBe(200);
        expect(again.body).toMatchObject({ userId: u, state: 'succeeded' });
      });
    }
    expect(winners).toBe(2);

    // Restocked: a new user joins and buys the unit, and the item sells out again. The users read
    // after the first sell-out are not the item's users any more: the new buyer is told their ticket.
    expect((await call('PUT', '/v1/items/end-1', { handler: 'seckill', config: { stock: 3 }, gate: { mode: 'auto' } })).status).toBe(200);
    const late = await waitFor(() => join('end-1', 'late-buyer'), (r) => r.status === 202);
    await settled([late.body.ticketId]);
    await waitFor(() => call('GET', '/v1/items/end-1'), (r) => r.body.state === 'sold_out');
    const buyer = await join('end-1', 'late-buyer');
    expect(buyer.status).toBe(200);
    expect(buyer.body).toMatchObject({ ticketId: late.body.ticketId, state: 'succeeded' });
    expect((await join('end-1', 'stranger-after')).status).toBe(410);
    const [orders] = await db.sql`select count(*)::int as n from orders where item_id = 'end-1'`;
    expect(orders.n).toBe(3);
  });

  it('a restock through another daemon is seen before a refusal from memory: a user who just joined there gets their ticket here', async () => {
    await call('PUT', '/v1/items/end-3', { handler: 'seckill', config: { stock: 1 }, gate: { mode: 'auto' } });
    const first = await join('end-3', 'w1');
    await settled([first.body.ticketId]);
    await waitFor(() => call('GET', '/v1/items/end-3'), (r) => r.body.state === 'sold_out');
    const calls = await strangersUntilFromMemory('end-3', (r) => expect(r.status).toBe(410));
    expect(calls).toBe(0); // this daemon refuses strangers from memory now
    // Restocked through the other daemon, with the gate closed so the new ticket waits; a new user joins there.
    expect((await other.call('PUT', '/v1/items/end-3', { handler: 'seckill', config: { stock: 2 }, gate: { mode: 'closed' } })).status).toBe(200);
    const there = await other.call('POST', '/v1/items/end-3/tickets', { userId: 'newcomer' }, SVC);
    expect(there.status).toBe(202);
    // Asked here at once: not "sold out" from the old view, but the ticket held.
    const here = await join('end-3', 'newcomer');
    expect(here.status).toBe(200);
    expect(here.body.ticketId).toBe(there.body.ticketId);
  });

  it('refuses strangers to a closed item from memory with the script\'s words', async () => {
    await call('PUT', '/v1/items/end-2', { handler: 'external', gate: { mode: 'closed' } });
    const held = await join('end-2', 'u1');
    expect((await call('DELETE', '/v1/items/end-2')).status).toBe(200);
    const fromScript = await join('end-2', 'stranger-0');
    expect(fromScript).toMatchObject({ status: 410, body: { error: { code: 'closed' } } });
    const calls = await strangersUntilFromMemory('end-2', (r) => expect(r.body).toEqual(fromScript.body));
    expect(calls).toBe(0);
    // The holder's ticket was cancelled by the close; the script answers them (external: a new join would be allowed, but the item is closed).
    const again = await join('end-2', 'u1');
    expect(again.status).toBe(410);
    expect((await call('GET', `/v1/tickets/${held.body.ticketId}`, undefined, null)).body.state).toBe('cancelled');
  });
});

describe('the ended items a daemon holds', () => {
  it('holds every ended item of a sale event (200 of them): one read of each, however the joins interleave', async () => {
    const p = newPrefix();
    let scans = 0;
    const counted = { hscan: (...a: Parameters<typeof redis.hscan>) => (scans++, redis.hscan(...a)) } as unknown as typeof redis;
    const ended = createEndedUsers({ redis: counted, prefix: p, now: () => Date.now() });
    // Item i: users a-i and b-i; b-i's ticket (seq 2) the sell-out ended while it waited, a-i's (seq 1) was served.
    const views = Array.from({ length: 200 }, (_, i) => ({ recordKey: 'k#1', snap: { def: { itemId: `many-${i}`, lines: 1 }, soldOut: true, closed: false, epoch: 1, seq: 2, cuts: [[2, 'r', 'sold_out', 0, 1]], draw: null } }) as never);
    for (let i = 0; i < 200; i++) await redis.hset(itemKeys(p, `many-${i}`).users, { [`a-${i}`]: 1, [`b-${i}`]: 2 });
    const ask = (i: number, u: string) => ended.refusable(views[i], `${u}-${i}`);
    for (let i = 0; i < 200; i++) expect(ask(i, 'x')).toBe(false); // not read yet: ask Redis
    await waitFor(async () => Array.from({ length: 200 }, (_, i) => ask(i, 'x')), (r) => r.every(Boolean), 5000);
    for (let round = 0; round < 3; round++)
      for (let i = 199; i >= 0; i--) {
        expect(ask(i, 'stranger')).toBe(true);
        expect(ask(i, 'b')).toBe(true);
        expect(ask(i, 'a')).toBe(false); // served before the cut: may hold a sale
      }
    expect(scans).toBe(200);
    expect(ended.size()).toBe(200);
    await unlinkPrefix(redis, p);
  });
});
