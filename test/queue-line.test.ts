import { describe, expect, it } from 'vitest';
import { manualClock } from '../src/kernel/clock.js';
import { createLine } from '../src/queue/line.js';
import type { LineDefinition } from '../src/queue/types.js';
import { itemKeys } from '../src/redis/keys.js';
import { testRedis, unlinkPrefix } from './support/redis.js';

const t = testRedis();
const def = (itemId: string, over: Partial<LineDefinition> = {}): LineDefinition => ({
  itemId,
  handler: 'external',
  config: {},
  capacity: null,
  abandonAfterMs: null,
  opensAt: null,
  closesAt: null,
  rejoin: 'any',
  ...over,
});

function setup(cacheMs = 0) {
  const clock = manualClock();
  const queue = createLine({ redis: t.redis, prefix: t.newPrefix(), clock, cacheMs });
  return { clock, queue };
}

describe('the line', () => {
  it('gives 200 concurrent joiners the positions 1..200 exactly once each', async () => {
    const { queue } = setup();
    await queue.definitions.define(def('a'), null, { reopen: false });
    const res = await Promise.all(Array.from({ length: 200 }, (_, i) => queue.tickets.join('a', `u${i}`, null)));
    expect(res.every((r) => r.created)).toBe(true);
    expect(res.map((r) => r.ticket.position).sort((x, y) => x! - y!)).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
  });

  it.each([1, 4])('never admits a ticket before it joined, when the join reached Redis before an admit whose clock read earlier (lines: %i)', async (lines) => {
    // Joins and admissions go over different connections (infra/redis-client.ts): an admit that read
    // the clock first may still run after a join that read it later.
    const prefix = t.newPrefix();
    const early = manualClock();
    const later = manualClock(early.now() + 40);
    const joins = createLine({ redis: t.redis, prefix, clock: later, cacheMs: 0 });
    const admits = createLine({ redis: t.redis, prefix, clock: early, cacheMs: 0 });
    await joins.definitions.define(def('a', { lines }), null, { reopen: false });
    const { ticket } = await joins.tickets.join('a', 'u1', null);
    const [got] = await admits.admissions.admit('a', 1, 1000);
    expect(got.ticketId).toBe(ticket.ticketId);
    const view = await joins.tickets.status(ticket.ticketId);
    expect(Date.parse(view.admittedAt!)).toBeGreaterThanOrEqual(Date.parse(view.createdAt));
  });

  it('returns the same ticket to a repeated join', async () => {
    const { queue } = setup();
    await queue.definitions.define(def('a'), null, { reopen: false });
    const first = await queue.tickets.join('a', 'u1', { x: 1 });
    const again = await queue.tickets.join('a', 'u1', null);
    expect(again.created).toBe(false);
    expect(again.ticket.ticketId).toBe(first.ticket.ticketId);
    expect(again.ticket.position).toBe(1);
  });

  it('hands out the head in order, and re-offers an expired lease ahead of later tickets', async () => {
    const { queue, clock } = setup();
    await queue.definitions.define(def('a'), null, { reopen: false });
    for (let i = 1; i <= 5; i++) await queue.tickets.join('a', `u${i}`, { n: i });
    const first = await queue.admissions.admit('a', 2, 1000);
    expect(first.map((x) => x.userId)).toEqual(['u1', 'u2']);
    expect(first[0].payload).toEqual({ n: 1 });
    await queue.admissions.settle(first[0].ticketId, { leaseId: first[0].leaseId, status: 'succeeded', result: { ok: 1 } });
    clock.advance(1001);
    expect(await queue.admissions.sweep()).toBe(1);
    const back = await queue.tickets.status(first[1].ticketId);
    expect(back).toMatchObject({ state: 'waiting', position: 1 });
    const next = await queue.admissions.admit('a', 2, 1000);
    expect(next.map((x) => x.userId)).toEqual(['u2', 'u3']);
    await expect(queue.admissions.settle(first[1].ticketId, { leaseId: first[1].leaseId, status: 'succeeded' })).rejects.toMatchObject({ code: 'lease_lost' });
    const done = await queue.tickets.status(first[0].ticketId);
    expect(done).toMatchObject({ state: 'succeeded', outcome: { status: 'succeeded', result: { ok: 1 } } });
  });

  it("does not let a forced 'failed' from a run whose lease ran out end the ticket while the run it was given to since holds a live lease", async () => {
    const { queue, clock } = setup();
    await queue.definitions.define(def('a'), null, { reopen: false });
    await queue.tickets.join('a', 'u1', null);
    const [stale] = await queue.admissions.admit('a', 1, 1000);
    clock.advance(1001);
    expect(await queue.admissions.sweep()).toBe(1);
    const [live] = await queue.admissions.admit('a', 1, 5000);
    expect(live.ticketId).toBe(stale.ticketId);
    // The first run gave up (a timeout on its last attempt) while the second's call goes on.
    expect(await queue.admissions.settleMany('a', [{ seq: stale.seq, leaseId: stale.leaseId, status: 'failed', reason: 'timeout', force: true }])).toEqual([-2]);
    expect(await queue.admissions.settleMany('a', [{ seq: stale.seq, leaseId: stale.leaseId, status: 'failed', reason: 'x', retry: true, force: true }])).toEqual([-2]);
    expect(await queue.tickets.status(live.ticketId)).toMatchObject({ state: 'admitted' });
    expect(await queue.admissions.settleMany('a', [{ seq: live.seq, leaseId: live.leaseId, status: 'succeeded', result: { orderId: 'A-1' }, force: true }])).toEqual([1]);
    expect(await queue.tickets.status(live.ticketId)).toMatchObject({ state: 'succeeded', outcome: { result: { orderId: 'A-1' } } });
  });

  it("holds a webhook ticket back at the head whose user was blocked meanwhile in doubt: its last run's success ends it, nothing runs it again, and without a run it ends blocked", async () => {
    const { queue, clock } = setup();
    const webhook = (id: string) => ({ ...def(id), handler: 'webhook', config: { url: 'http://127.0.0.1:2/hook' } });
    for (const id of ['w1', 'w2']) {
      await queue.definitions.define(webhook(id), null, { reopen: false });
      await queue.tickets.join(id, 'alice', null);
    }
    const [r1] = await queue.admissions.admit('w1', 1, 1000);
    const [r2] = await queue.admissions.admit('w2', 1, 1000);
    // Their runs' leases run out while the calls go on (a stall), and an operator blocks alice.
    clock.advance(1001);
    expect(await queue.admissions.sweep()).toBe(2);
    for (const id of ['w1', 'w2']) await queue.definitions.blocks.set(id, 'alice', 'item', true);
    expect(await queue.admissions.admit('w1', 1, 1000)).toEqual([]);
    expect(await queue.admissions.admit('w2', 1, 1000)).toEqual([]);
    expect(await queue.tickets.status(r1.ticketId)).toMatchObject({ state: 'admitted' });
    const doubts = await queue.admissions.doubts('w1', clock.now() + 1);
    expect(doubts.map((d) => [d.seq, d.held])).toEqual([[r1.seq, true]]);
    // Run again, it would serve the blocked user: it is not.
    expect(await queue.admissions.relaunchDoubts('w1', [r1.seq], 1000)).toEqual([]);
    // The first run's call made the order: its forced settle ends the ticket with it.
    expect(await queue.admissions.settleMany('w1', [{ seq: r1.seq, leaseId: r1.leaseId, status: 'succeeded', result: { orderId: 'A-1' }, force: true }])).toEqual([1]);
    expect(await queue.tickets.status(r1.ticketId)).toMatchObject({ state: 'succeeded', outcome: { result: { orderId: 'A-1' } } });
    // No run came back for the other: it ends with its own outcome.
    expect(await queue.admissions.resolveDoubts('w2', [{ seq: r2.seq, result: null }])).toBe(1);
    expect(await queue.tickets.status(r2.ticketId)).toMatchObject({ state: 'rejected', outcome: { reason: 'blocked' } });
  });

  it('counts the tickets returned to the head in every place behind them: no two tickets read place 1', async () => {
    const { queue, clock } = setup();
    await queue.definitions.define(def('a'), null, { reopen: false });
    const ids: string[] = [];
    for (let i = 1; i <= 5; i++) ids.push((await queue.tickets.join('a', `u${i}`, null)).ticket.ticketId);
    await queue.admissions.admit('a', 2, 1000);
    clock.advance(1001);
    expect(await queue.admissions.sweep()).toBe(2);
    const positions = [];
    for (const id of ids) positions.push((await queue.tickets.status(id)).position);
    // (Before: [1, 2, 1, 2, 3], the line's places counted from the head as if the two had left it.)
    expect(positions).toEqual([1, 2, 3, 4, 5]);
    // A join behind them is told its place with them counted too.
    expect((await queue.tickets.join('a', 'u6', null)).ticket.position).toBe(6);
  });

  it("forgets a ticket a Redis rollback lost, though joins since brought the counters back past it: another daemon's view does not keep it waiting", async () => {
    const clock = manualClock();
    const prefix = t.newPrefix();
    const a = createLine({ redis: t.redis, prefix, clock, cacheMs: 250 });
    const b = createLine({ redis: t.redis, prefix, clock, cacheMs: 250 });
    await a.definitions.define(def('rb'), null, { reopen: false });
    const tickets = [];
    for (let i = 1; i <= 5; i++) tickets.push((await a.tickets.join('rb', `u${i}`, null)).ticket);
    clock.advance(300);
    expect(await a.tickets.status(tickets[4].ticketId)).toMatchObject({ state: 'waiting', position: 5 });
    // The rollback loses the last join (seq 5); another daemon's joins then take seqs 5 and 6.
    const k = itemKeys(prefix, 'rb');
    await t.redis.hdel(k.page(5), '5');
    await t.redis.hdel(k.users, 'u5');
    await t.redis.hincrby(k.ctr, 'seq', -1);
    await t.redis.hincrby(k.ctr, 'waiting', -1);
    await b.tickets.join('rb', 'u9', null);
    await b.tickets.join('rb', 'u10', null);
    clock.advance(300);
    // (Before: `waiting` at place 5 here, while the other daemon answered 404, until the head passed seq 5.)
    await expect(a.tickets.status(tickets[4].ticketId)).rejects.toMatchObject({ code: 'ticket_not_found' });
    await expect(b.tickets.status(tickets[4].ticketId)).rejects.toMatchObject({ code: 'ticket_not_found' });
    expect(await a.tickets.status(tickets[3].ticketId)).toMatchObject({ state: 'waiting', position: 4 });
  });

  it('cancels a waiting ticket, skips it at the head, and ends all waiting tickets on close', async () => {
    const { queue } = setup();
    await queue.definitions.define(def('a'), null, { reopen: false });
    const tickets = [];
    for (let i = 1; i <= 4; i++) tickets.push((await queue.tickets.join('a', `u${i}`, null)).ticket);
    expect(await queue.tickets.cancel(tickets[0].ticketId)).toMatchObject({ state: 'cancelled' });
    expect(await queue.tickets.cancel(tickets[0].ticketId)).toMatchObject({ state: 'cancelled' }); // a repeat reads it again
    const got = await queue.admissions.admit('a', 1, 1000);
    await expect(queue.tickets.cancel(got[0].ticketId)).rejects.toMatchObject({ code: 'not_cancellable' });
    expect(got[0].userId).toBe('u2');
    expect(await queue.definitions.cut('a', 'closed')).toBe(2);
    expect(await queue.tickets.status(tickets[3].ticketId)).toMatchObject({ state: 'cancelled', outcome: { reason: 'item_closed' } });
    await expect(queue.tickets.join('a', 'u9', null)).rejects.toMatchObject({ code: 'closed' });
  });

  it('reads an item again after a refused join only when its view did not already say why (sold out, full, closed)', async () => {
    const clock = manualClock();
    const prefix = t.newPrefix();
    const queue = createLine({ redis: t.redis, prefix, clock, cacheMs: 60_000 });
    const other = createLine({ redis: t.redis, prefix, clock, cacheMs: 60_000 }); // another daemon
    let invalidated = 0;
    const invalidate = queue.items.invalidate.bind(queue.items);
    queue.items.invalidate = (itemId) => {
      invalidated++;
      invalidate(itemId);
    };
    await queue.definitions.define(def('a'), null, { reopen: false });
    const held = (await queue.tickets.join('a', 'u1', null)).ticket;
    await queue.admissions.admit('a', 1, 60_000); // admitted: a sold-out cut ends only waiting tickets
    await queue.definitions.cut('a', 'sold_out');
    expect((await queue.items.item('a'))?.snap.soldOut).toBe(true);
    invalidated = 0;
    for (let i = 0; i < 5; i++) await expect(queue.tickets.join('a', `late${i}`, null)).rejects.toMatchObject({ code: 'sold_out' });
    // The holder still gets the ticket back (the join script decides), and nothing was read again.
    expect((await queue.tickets.join('a', 'u1', null)).ticket.ticketId).toBe(held.ticketId);
    expect(invalidated).toBe(0);

    // Full, and the view says so: refused without reading the item again.
    await queue.definitions.define(def('f', { capacity: 1 }), null, { reopen: false });
    await queue.tickets.join('f', 'u1', null);
    expect((await queue.items.item('f', { fresh: true }))?.snap.counts.waiting).toBe(1);
    invalidated = 0;
    await expect(queue.tickets.join('f', 'u2', null)).rejects.toMatchObject({ code: 'queue_full' });
    expect(invalidated).toBe(0);

    // Closed by another daemon while this view says open: the refusal says the view is old.
    await queue.definitions.define(def('b'), null, { reopen: false });
    expect((await queue.items.item('b'))?.snap.closed).toBe(false);
    await other.definitions.cut('b', 'closed');
    await expect(queue.tickets.join('b', 'u1', null)).rejects.toMatchObject({ code: 'closed' });
    expect(invalidated).toBe(1);
    expect((await queue.items.item('b'))?.snap.closed).toBe(true);
  });

  it('answers 404 for a cached ticket id once its item was lost and created anew', async () => {
    const clock = manualClock();
    const prefix = t.newPrefix();
    const queue = createLine({ redis: t.redis, prefix, clock, cacheMs: 250 });
    await queue.definitions.define(def('a'), null, { reopen: false });
    const old = (await queue.tickets.join('a', 'u1', null)).ticket;
    expect(await queue.tickets.status(old.ticketId)).toMatchObject({ state: 'waiting', position: 1 }); // now cached
    await unlinkPrefix(t.redis, prefix); // Redis lost the item
    await queue.definitions.define(def('a'), null, { reopen: false });
    await queue.tickets.join('a', 'someone-else', null); // seq 1 exists again, under a new secret
    clock.advance(300);
    await expect(queue.tickets.status(old.ticketId)).rejects.toMatchObject({ code: 'ticket_not_found' });
  });
});

describe('ids the daemon did not issue', () => {
  it('cost no Redis call when they name an unknown item, however many arrive', async () => {
    const clock = manualClock();
    const redis = t.redis.duplicate();
    const prefix = t.newPrefix();
    const queue = createLine({ redis, prefix, clock, cacheMs: 250 });
    await queue.definitions.define(def('real'), null, { reopen: false });
    let calls = 0;
    const send = redis.sendCommand.bind(redis);
    redis.sendCommand = ((...args: Parameters<typeof send>) => {
      calls++;
      return send(...args);
    }) as typeof redis.sendCommand;
    const forged = (i: number) => `${Buffer.from(`nope-${i}`).toString('base64url')}.1.${'A'.repeat(22)}`;
    // A flood: 2,000 forged ids, 100 at a time. The misses that arrive together share one check.
    for (let i = 0; i < 2000; i += 100) {
      clock.advance(1);
      const answers = await Promise.allSettled(Array.from({ length: 100 }, (_, j) => queue.tickets.status(forged(i + j))));
      expect(answers.every((a) => a.status === 'rejected' && (a.reason as { code?: string }).code === 'ticket_not_found')).toBe(true);
    }
    expect(calls).toBeLessThanOrEqual(60);
    // An item made on another daemon a moment ago is never refused: a miss checks again.
    const other = createLine({ redis: t.redis, prefix, clock, cacheMs: 250 });
    await other.definitions.define(def('new'), null, { reopen: false });
    const { ticket: fresh } = await other.tickets.join('new', 'u1', null);
    expect((await queue.tickets.status(fresh.ticketId)).state).toBe('waiting');
    // A ticket of a real item still reads (and an item made elsewhere appears after the recheck).
    const { ticket } = await queue.tickets.join('real', 'u1', null);
    expect((await queue.tickets.status(ticket.ticketId)).state).toBe('waiting');
    redis.disconnect();
  });
});

describe('the set of items each daemon holds a copy of', () => {
  /** Two daemons' lines on one prefix. */
  const twoOn = (prefix: string, clock = manualClock()) => [0, 1].map(() => createLine({ redis: t.redis, prefix, clock, cacheMs: 0 }));
  it('is read again after Redis lost it, even when the version counted up again to the value a daemon last read', async () => {
    const prefix = t.newPrefix();
    const [a, b] = twoOn(prefix);
    await a.definitions.define(def('before'), null, { reopen: false });
    expect(await a.items.itemIds()).toEqual(['before']);
    // Redis flushed (or restarted empty); then another daemon defines an item before this one looks.
    await unlinkPrefix(t.redis, prefix);
    await b.definitions.define(def('after'), null, { reopen: false });
    // A copy taken for the same version number would still show the lost item and miss the new one.
    expect(await a.items.itemIds()).toEqual(['after']);
  });

  it('is read again after a reconnect, even when a Redis restarted from an older file counted its version up again to the value read before', async () => {
    const prefix = t.newPrefix();
    const [a, b] = twoOn(prefix);
    await a.definitions.define(def('old'), null, { reopen: false });
    await a.definitions.define(def('lost'), null, { reopen: false });
    expect((await a.items.itemIds()).sort()).toEqual(['lost', 'old']);
    // The rollback: 'lost' was defined after the file was written; the version is one lower.
    await t.redis.srem(`${prefix}items`, 'lost');
    await t.redis.decr(`${prefix}items:ver`);
    await b.definitions.define(def('new'), null, { reopen: false }); // back to the version a read
    await a.items.activateAll(); // what a daemon does on the reconnect
    expect((await a.items.itemIds()).sort()).toEqual(['new', 'old']);
  });
});
