import { describe, expect, it } from 'vitest';
import { createCatalog } from '../src/catalog/catalog.js';
import { createItemsStore } from '../src/db/items-store.js';
import { createStockRows } from '../src/db/stock-rows.js';
import { manualClock } from '../src/kernel/clock.js';
import { createLogger } from '../src/kernel/logger.js';
import { createLine } from '../src/queue/line.js';
import { createSplitLine, subLineOf } from '../src/queue/split-line.js';
import { itemKeys, subLineTag } from '../src/redis/keys.js';
import type { RedisLike } from '../src/redis/client.js';
import { createGateStore } from '../src/scheduler/gate-store.js';
import { createHandlerRegistry } from '../src/service/registry.js';
import { createStockCounters } from '../src/service/stock-counters.js';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { joinAll, retrying503, userIds } from './support/joins.js';
import { testRedis, unlinkPrefix } from './support/redis.js';
import { expectSoldExactly } from './support/sale-checks.js';
import { followTicket } from './support/ticket-stream.js';
import { rowsOf } from './support/split.js';


/** Items split into sub-lines (lines > 1) at their edges, through one daemon on one Redis. */
const { redis, newPrefix } = testRedis();
const db = await testDb();
// The catalog test's own: the daemon would restore that test's rows into its own prefix.
const own = await testDb();
const prefix = newPrefix();
const { call: callOnce, daemon } = await inProcessDaemon({ prefix, databaseUrl: db.url });
// A 503 (a busy machine's Redis past its budget) asked again, as a client does.
const call = retrying503(callOnce);

type View = { ticketId: string; userId: string; state: string; position?: number; etaMs?: number; outcome?: { status: string; reason?: string } };
const poll = (id: string): Promise<View> => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body);

/** Joins users one after another, so their join order is known (admission must follow it). */
async function joinInOrder(itemId: string, users: string[]) {
  const ids: string[] = [];
  for (const userId of users) {
    const r = await call('POST', `/v1/items/${itemId}/tickets`, { userId }, SVC);
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    ids.push(r.body.ticketId);
  }
  return ids;
}

/** An external item on its own prefix and a manual clock, split into 4 sub-lines (defined, not yet joined). */
async function externalSplitInFour(itemId: string) {
  const p = newPrefix();
  const clock = manualClock();
  const line = createLine({ redis, prefix: p, clock, cacheMs: 0 });
  await line.definitions.define({ itemId, handler: 'external', config: {}, capacity: null, abandonAfterMs: null, opensAt: null, closesAt: null, rejoin: 'any' }, { mode: 'manual', rate: null, maxInFlight: null }, { reopen: false });
  const item = { itemId, lines: 4 };
  const split = createSplitLine({ redis, prefix: p, clock });
  await split.defineSubLines(item);
  return { p, clock, item, split };
}

describe('an item split into sub-lines, at its edges', () => {
  it('shows positions that never rise, stay distinct and never claim a place ahead of the true one, through cancels and pulls', { timeout: 120_000 }, async () => {
    await call('PUT', '/v1/items/pos8', { handler: 'external', lines: 8, gate: { mode: 'manual', maxInFlight: 1000 } });
    const users = userIds(0, 48, 'p');
    const ids = await joinInOrder('pos8', users);
    const waiting = new Set(ids);
    const last = new Map<string, number>();
    let round = 0;
    while (waiting.size) {
      const order = ids.filter((id) => waiting.has(id));
      const views = await Promise.all(order.map(poll));
      for (const [i, v] of views.entries()) {
        expect(v.state, v.ticketId).toBe('waiting');
        // True place: 1 + the waiting tickets that joined before it (admission follows join order).
        expect(v.position!, `round ${round}: ticket ${i + 1} in line`).toBeGreaterThanOrEqual(i + 1);
        expect(v.position!).toBeLessThanOrEqual(last.get(v.ticketId) ?? Infinity);
        last.set(v.ticketId, v.position!);
      }
      expect(new Set(views.map((v) => v.position)).size).toBe(views.length);
      // Two cancels anywhere in the line, then a pull of three from its head.
      const cancelled = [];
      for (const id of [order[(round * 7) % order.length], order[(round * 13 + 5) % order.length]]) {
        if (!waiting.has(id)) continue;
        expect((await call('DELETE', `/v1/tickets/${id}`, undefined, null)).body.state).toBe('cancelled');
        waiting.delete(id);
        cancelled.push(id);
      }
      // In the first rounds one of them joins again: a new ticket, at the back of the line.
      if (round < 6 && cancelled.length) {
        const userId = views[order.indexOf(cancelled[0])].userId;
        const again = await call('POST', '/v1/items/pos8/tickets', { userId }, SVC);
        expect(again.status).toBe(202);
        expect(again.body.position).toBeGreaterThanOrEqual(waiting.size + 1);
        ids.push(again.body.ticketId);
        waiting.add(again.body.ticketId);
        expect((await poll(cancelled[0])).state).toBe('cancelled');
      }
      const head = ids.filter((id) => waiting.has(id)).slice(0, 3);
      const pulled = await call('POST', '/v1/items/pos8/pull', { max: 3 }, SVC);
      expect(pulled.status).toBe(200);
      expect(pulled.body.tickets.map((t: { ticketId: string }) => t.ticketId)).toEqual(head);
      for (const t of pulled.body.tickets) {
        expect((await call('POST', `/v1/tickets/${t.ticketId}/outcome`, { leaseId: t.leaseId, status: 'succeeded' }, SVC)).status).toBe(200);
        waiting.delete(t.ticketId);
      }
      round++;
    }
  });

  it('places tickets whose lease ran out first, each at a place of its own among them, and admits them in that order', { timeout: 60_000 }, async () => {
    await call('PUT', '/v1/items/ret8', { handler: 'external', lines: 8, gate: { mode: 'manual', maxInFlight: 1000 } });
    // Users on four different sub-lines first, so the tickets that come back are spread over them.
    const first = [0, 1, 2, 3].map((k) => userIds(0, 200, 'r').find((u) => subLineOf(u, 8) === k * 2)!);
    const ids = await joinInOrder('ret8', [...first, ...userIds(0, 12, 'later')]);
    const pulled = await call('POST', '/v1/items/ret8/pull', { max: 4, leaseMs: 1000 }, SVC);
    expect(pulled.body.tickets.map((t: { ticketId: string }) => t.ticketId)).toEqual(ids.slice(0, 4));
    // No outcome: their leases run out and the sweep puts them back at the head.
    const back = await waitFor(() => Promise.all(ids.slice(0, 4).map(poll)), (vs) => vs.every((v) => v.state === 'waiting'), 30_000);
    expect(back.map((v) => v.state)).toEqual(['waiting', 'waiting', 'waiting', 'waiting']);
    const places = back.map((v) => v.position!);
    expect([...places].sort()).toEqual([1, 2, 3, 4]);
    const again = await call('POST', '/v1/items/ret8/pull', { max: 4 }, SVC);
    const byPlace = ids.slice(0, 4).map((id, i) => ({ id, p: places[i] })).sort((a, b) => a.p - b.p).map((x) => x.id);
    expect(again.body.tickets.map((t: { ticketId: string }) => t.ticketId)).toEqual(byPlace);
  });

  it("reads a waiting ticket's number no later than its record: an admission between the two never leaves a waiting ticket without its place", async () => {
    const { p, clock, item, split: admitter } = await externalSplitInFour('race');
    const joined = await admitter.join(item, 'racer');
    // Once before, so Redis holds the read script (a first EVALSHA that Redis answers NOSCRIPT is sent again later, as EVAL).
    expect((await admitter.readTicket(item, joined.seq)).position).toBe(1);
    // The reader's connection admits the ticket as the reader asks for its number: the reader's
    // commands sent before that one run before the admission (one connection, in order), those
    // after it after.
    let admitted = false;
    const racing = new Proxy(redis, {
      get(target, name, receiver) {
        const v = Reflect.get(target, name, receiver);
        if (name !== 'zscore') return typeof v === 'function' ? v.bind(target) : v;
        return async (...args: [string, string]) => {
          await new Promise((r) => setImmediate(r));
          if (!admitted) admitted = (await rowsOf(admitter.admit(item, 10, 60_000))).length === 1;
          return target.zscore(...args);
        };
      },
    }) as unknown as RedisLike;
    const read = await createSplitLine({ redis: racing, prefix: p, clock }).readTicket(item, joined.seq);
    expect(admitted).toBe(true);
    const state = read.record?.[0];
    if (state === 'w') expect({ position: read.position, retryRank: read.retryRank }).toMatchObject({ position: 1, retryRank: -1 });
    else expect(state).toBe('a');
  });

  it('sells a stock smaller than its lines to the first joiners of any sub-line, tells the rest sold_out, and sells a restock after the sell-out', { timeout: 120_000 }, async () => {
    await call('PUT', '/v1/items/few8', { handler: 'seckill', config: { stock: 3 }, lines: 8, gate: { mode: 'closed' } });
    // Five of the eight sub-lines have no unit of their own; the first three joiners are on them.
    const empty = userIds(0, 400, 'f').filter((u) => subLineOf(u, 8) >= 3);
    const users = [...empty.slice(0, 3), ...userIds(0, 47, 'g')];
    const ids = await joinInOrder('few8', users);
    expect((await call('GET', '/v1/items/few8')).body).toMatchObject({ remaining: 3, counts: { waiting: 50 } });
    expect((await call('PATCH', '/v1/items/few8/gate', { mode: 'manual', maxInFlight: 16 })).status).toBe(200);
    const views = await expectSoldExactly(db.sql, 'few8', 3, ids, poll);
    expect(views.slice(0, 3).map((v) => v.state)).toEqual(['succeeded', 'succeeded', 'succeeded']);
    expect((await call('GET', '/v1/items/few8')).body).toMatchObject({ state: 'sold_out', remaining: 0, counts: { waiting: 0, admitted: 0, succeeded: 3, rejected: 47 } });
    expect((await call('POST', '/v1/items/few8/tickets', { userId: 'late' }, SVC)).status).toBe(410);

    // Three more units: the item sells again, to users told sold_out before and to new ones.
    const restock = await call('PUT', '/v1/items/few8', { handler: 'seckill', config: { stock: 6 }, lines: 8 });
    expect(restock.body).toMatchObject({ state: 'open', remaining: 3 });
    const again = await joinAll((userId) => call('POST', '/v1/items/few8/tickets', { userId }, SVC), [...users.slice(3, 23), ...userIds(0, 20, 'h')], { also: [410] });
    const more = again.filter((a) => a.status === 202).map((a) => a.body.ticketId as string);
    const ended = await waitFor(() => Promise.all(more.map(poll)), (vs) => vs.every((v) => v.state === 'succeeded' || v.state === 'rejected'), 60_000);
    expect(ended.filter((v) => v.state === 'succeeded').length).toBe(3);
    expect(ended.filter((v) => v.state === 'rejected').every((v) => v.outcome?.reason === 'sold_out')).toBe(true);
    const [{ n }] = await db.sql`select count(*)::int as n from orders where item_id = 'few8'`;
    expect(n).toBe(6);
    expect((await call('GET', '/v1/items/few8')).body).toMatchObject({ state: 'sold_out', remaining: 0, counts: { waiting: 0, admitted: 0, succeeded: 6 } });
  });

  it('shows the first joiner after a restock place 1, not the tickets the sell-out ended and the joins it refused as places ahead', { timeout: 60_000 }, async () => {
    await call('PUT', '/v1/items/pos4', { handler: 'seckill', config: { stock: 1 }, lines: 4, gate: { mode: 'closed' } });
    await joinInOrder('pos4', userIds(0, 20, 'p'));
    // Sold out (its stock set to 0): the 20 waiting end; then 30 joins are refused, each with a join number.
    expect((await call('PUT', '/v1/items/pos4', { handler: 'seckill', config: { stock: 0 }, lines: 4, gate: { mode: 'closed' } })).body).toMatchObject({ state: 'sold_out' });
    for (const u of userIds(0, 30, 'r')) expect((await call('POST', '/v1/items/pos4/tickets', { userId: u }, SVC)).status).toBe(410);
    expect((await call('PUT', '/v1/items/pos4', { handler: 'seckill', config: { stock: 5 }, lines: 4, gate: { mode: 'closed' } })).body).toMatchObject({ remaining: 5 });
    const first = await call('POST', '/v1/items/pos4/tickets', { userId: 'after-1' }, SVC);
    const second = await call('POST', '/v1/items/pos4/tickets', { userId: 'after-2' }, SVC);
    expect([first.body.position, second.body.position]).toEqual([1, 2]);
    expect((await poll(first.body.ticketId)).position).toBe(1);
  });

  it('comes back whole after Redis loses it: its lines, the units Postgres leaves, and a sale of exactly those', { timeout: 120_000 }, async () => {
    await call('PUT', '/v1/items/lost8', { handler: 'seckill', config: { stock: 10 }, lines: 8, gate: { mode: 'manual', maxInFlight: 8 } });
    const before = await joinInOrder('lost8', userIds(0, 4, 'l'));
    const sold = await waitFor(() => Promise.all(before.map(poll)), (vs) => vs.every((v) => v.state === 'succeeded'), 30_000);
    expect(sold.map((v) => v.state)).toEqual(['succeeded', 'succeeded', 'succeeded', 'succeeded']);
    await unlinkPrefix(redis, prefix);
    const back = await waitFor(() => callOnce('GET', '/v1/items/lost8'), (r) => r.status === 200 && r.body.remaining === 6, 30_000);
    expect(back.body).toMatchObject({ lines: 8, remaining: 6, state: 'open' });
    const joins = await joinAll((userId) => call('POST', '/v1/items/lost8/tickets', { userId }, SVC), userIds(0, 30, 'm'), { also: [410] });
    const ids = joins.filter((j) => j.status !== 410).map((j) => j.body.ticketId as string);
    const views = await waitFor(() => Promise.all(ids.map(poll)), (vs) => vs.every((v) => v.state === 'succeeded' || v.state === 'rejected'), 60_000);
    expect(views.filter((v) => v.state === 'succeeded').length).toBe(6);
    const [{ n }] = await db.sql`select count(*)::int as n from orders where item_id = 'lost8'`;
    expect(n).toBe(10);
    expect((await call('GET', '/v1/items/lost8')).body).toMatchObject({ state: 'sold_out', remaining: 0 });
  });

  it('closed while tickets are admitted: the waiting end cancelled, the admitted keep their outcome or end with the close, and a reopening takes new joins only', { timeout: 120_000 }, async () => {
    await call('PUT', '/v1/items/shut8', { handler: 'external', lines: 8, gate: { mode: 'manual', maxInFlight: 100 } });
    const ids = await joinInOrder('shut8', userIds(0, 20, 's'));
    const kept = (await call('POST', '/v1/items/shut8/pull', { max: 3 }, SVC)).body.tickets as { ticketId: string; leaseId: string }[];
    const dropped = (await call('POST', '/v1/items/shut8/pull', { max: 3, leaseMs: 1000 }, SVC)).body.tickets as { ticketId: string; leaseId: string }[];
    expect([...kept, ...dropped].map((t) => t.ticketId)).toEqual(ids.slice(0, 6));
    const closed = await call('DELETE', '/v1/items/shut8');
    expect(closed.body).toMatchObject({ state: 'closed', counts: { waiting: 0, admitted: 6, cancelled: 14 } });
    for (const id of ids.slice(6)) expect(await poll(id)).toMatchObject({ state: 'cancelled', outcome: { reason: 'item_closed' } });
    for (const t of kept) expect((await call('POST', `/v1/tickets/${t.ticketId}/outcome`, { leaseId: t.leaseId, status: 'succeeded' }, SVC)).body.state).toBe('succeeded');
    expect((await call('POST', '/v1/items/shut8/tickets', { userId: 'after-close' }, SVC)).status).toBe(410);
    const reopened = await call('PUT', '/v1/items/shut8', { handler: 'external', lines: 8 });
    expect(reopened.body.state).toBe('open');
    const late = await call('POST', '/v1/items/shut8/tickets', { userId: 'after-reopen' }, SVC);
    expect(late.status).toBe(202);
    // The leases that ran out end with the close they were admitted before, not at the head of the reopened line.
    const ends = await waitFor(() => Promise.all(dropped.map((t) => poll(t.ticketId))), (vs) => vs.every((v) => v.state !== 'admitted'), 30_000);
    expect(ends.map((v) => [v.state, v.outcome?.reason])).toEqual(dropped.map(() => ['cancelled', 'item_closed']));
    const next = (await call('POST', '/v1/items/shut8/pull', { max: 10 }, SVC)).body.tickets as { ticketId: string }[];
    expect(next.map((t) => t.ticketId)).toEqual([late.body.ticketId]);
    expect((await poll(late.body.ticketId)).state).toBe('admitted');
  });

  it('keeps one `lines` for an item two definitions create at once: one wins in Redis and in its row, the other is 409', { timeout: 120_000 }, async () => {
    for (let i = 0; i < 20; i++) {
      const itemId = `twice-${i}`;
      const answers = await Promise.all([8, 2].map((lines) => call('PUT', `/v1/items/${itemId}`, { handler: 'external', lines })));
      const held = (await call('GET', `/v1/items/${itemId}`)).body.lines;
      const [row] = await db.sql`select lines from items where item_id = ${itemId}`;
      // Each answer is what the item is, or a conflict; and Postgres says what Redis holds.
      const seen = answers.map((a) => (a.status === 409 ? 'conflict' : `${a.status === 200 || a.status === 201} ${a.body.lines}`));
      expect({ seen, row: row?.lines }, itemId).toEqual({ seen: seen.map((x) => (x === 'conflict' ? x : `true ${held}`)), row: held });
      // Tickets joined under it stay on its sub-lines and are admitted.
      const joined = await call('POST', `/v1/items/${itemId}/tickets`, { userId: 'u' }, SVC);
      expect(joined.status).toBe(202);
      const pulled = await call('POST', `/v1/items/${itemId}/pull`, { max: 5 }, SVC);
      expect(pulled.body.tickets.map((t: { ticketId: string }) => t.ticketId)).toEqual([joined.body.ticketId]);
    }
  });

  it("ends a seckill ticket whose user was blocked after joining rejected/blocked, and sells its unit to the next in line", { timeout: 120_000 }, async () => {
    await call('PUT', '/v1/items/blk8', { handler: 'seckill', config: { stock: 4 }, lines: 8, gate: { mode: 'closed' } });
    const users = userIds(0, 12, 'b');
    const ids = await joinInOrder('blk8', users);
    // The first in line (on a sub-line of its own, not the item's) and the third.
    const [bad, worse] = [users[0], users[2]];
    expect(subLineOf(bad, 8)).not.toBe(0);
    expect((await call('PUT', `/v1/items/blk8/blocks/${bad}`)).status).toBe(200);
    expect((await call('PUT', `/v1/blocks/${worse}`)).status).toBe(200);
    try {
      expect((await call('PATCH', '/v1/items/blk8/gate', { mode: 'manual', maxInFlight: 2 })).status).toBe(200);
      const views = await waitFor(() => Promise.all(ids.map(poll)), (vs) => vs.every((v) => v.state !== 'waiting' && v.state !== 'admitted'), 60_000);
      expect(views.map((v) => `${v.state}/${v.outcome?.reason ?? ''}`)).toEqual([
        'rejected/blocked',
        'succeeded/',
        'rejected/blocked',
        'succeeded/',
        'succeeded/',
        'succeeded/',
        ...ids.slice(6).map(() => 'rejected/sold_out'),
      ]);
      expect((await call('GET', '/v1/items/blk8')).body).toMatchObject({ state: 'sold_out', remaining: 0 });
    } finally {
      await call('DELETE', `/v1/blocks/${worse}`);
    }
  });

  it("tells a ticket's event stream of its place and its admission as soon as a round moves the line", { timeout: 60_000 }, async () => {
    await call('PUT', '/v1/items/sse8', { handler: 'external', lines: 8, gate: { mode: 'manual', maxInFlight: 1000 } });
    const ids = await joinInOrder('sse8', userIds(0, 12, 'e'));
    const stream = followTicket({ request: (path: string) => fetch(daemon.url + path) }, ids[11]);
    expect(await stream.next()).toMatchObject({ state: 'waiting', position: 12 });
    // Past its first pollAfterMs (1 s) with the line standing still, the watcher waits for the line to move.
    await new Promise((r) => setTimeout(r, 2000));
    // Told within 5 s of the pull (the heartbeat, 10 s after the last view, came first before).
    const within = async (ms: number) => {
      const from = Date.now();
      const v = await stream.next(ms);
      return { v, ms: Date.now() - from };
    };
    expect((await call('POST', '/v1/items/sse8/pull', { max: 6 }, SVC)).body.tickets).toHaveLength(6);
    const moved = await within(5000);
    expect(moved.v, `after ${moved.ms} ms`).toMatchObject({ state: 'waiting', position: 6 });
    await new Promise((r) => setTimeout(r, 2000));
    expect((await call('POST', '/v1/items/sse8/pull', { max: 6 }, SVC)).body.tickets).toHaveLength(6);
    const admitted = await within(5000);
    expect(admitted.v, `after ${admitted.ms} ms`).toMatchObject({ state: 'admitted' });
  });

  it('keeps a ticket that joins a sub-line its sell-out cut had just passed, once a restock opened it again, in the line', async () => {
    const { p, clock, item, split: other } = await externalSplitInFour('recut');
    const early = await other.join(item, 'early');
    const late = userIds(0, 100, 'late').find((u) => subLineOf(u, 4) === early.sub)!;
    const meta = itemKeys(p, subLineTag('recut', early.sub)).meta;
    // Right after the cut script ended that sub-line's tickets, a restock there (its flag cleared)
    // and a join to it, before the cut has gone on to its next step on that sub-line.
    let joined: Awaited<ReturnType<typeof other.join>> | null = null;
    const racing = new Proxy(redis, {
      get(target, name, receiver) {
        const v = Reflect.get(target, name, receiver);
        if (name !== 'cut') return typeof v === 'function' ? v.bind(target) : v;
        return async (...args: string[]) => {
          const n = await (v as (...a: string[]) => Promise<number>).apply(target, args);
          if (args[0] === meta && !joined) {
            await target.hdel(meta, 'soldOut');
            joined = await other.join(item, late);
          }
          return n;
        };
      },
    }) as unknown as RedisLike;
    expect(await createSplitLine({ redis: racing, prefix: p, clock }).cut(item, 'sold_out')).toBe(1);
    expect(joined).toMatchObject({ created: true });
    expect(await other.readTicket(item, early.seq)).toMatchObject({ cut: { 1: 'r' } });
    // The ticket that joined after the cut waits in the line, and a round admits it.
    expect((await other.readTicket(item, joined!.seq)).position).toEqual(expect.any(Number));
    expect((await rowsOf(other.admit(item, 10, 60_000))).map((r) => r.seq)).toEqual([joined!.seq]);
  });

  it('never shows a waiting ticket a place under 1, even when the admission cursor has passed its number', async () => {
    const { p, item, split } = await externalSplitInFour('floor');
    const a = await split.join(item, 'fa');
    const b = await split.join(item, 'fb');
    // The cursor moved past both numbers without admitting them (a restock's move racing a join
    // numbered while sold out; rounds overlapping past their lock): a split review read 0 and less.
    await redis.hset(itemKeys(p, 'floor').ctr, 'an', String(Math.max(a.num, b.num) + 3));
    expect((await split.readTicket(item, a.seq)).position).toBe(1);
    expect((await split.readTicket(item, b.seq)).position).toBe(1);
  });

  it('keeps the lines of an item Redis lost when it is replaced without them before its restore', async () => {
    const p = newPrefix();
    const clock = manualClock();
    const queue = createLine({ redis, prefix: p, clock, cacheMs: 0 });
    const catalog = createCatalog({ queue, store: createItemsStore(own.db), stockRows: createStockRows(own.sql), counters: createStockCounters({ redis, prefix: p, clock, items: queue.items }), gates: createGateStore(redis, p, clock), handlers: createHandlerRegistry(), clock, log: createLogger('silent'), autoCap: 10 });
    const op = { role: 'operator' as const, key: 'k' };
    expect((await catalog.put('kept8', { handler: 'seckill', config: { stock: 5 }, lines: 8 }, op)).item.lines).toBe(8);
    await unlinkPrefix(redis, p);
    // The operator raises the stock before the loss check has put the item back: a replacement, lines absent.
    expect((await catalog.put('kept8', { handler: 'seckill', config: { stock: 9 } }, op)).item).toMatchObject({ lines: 8, remaining: 9 });
    const [row] = await own.sql`select lines from items where item_id = 'kept8'`;
    expect(row.lines).toBe(8);
  });
});
