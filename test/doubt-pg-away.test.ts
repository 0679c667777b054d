import { Redis } from 'ioredis';
import postgres from 'postgres';
import { afterAll, describe, expect, it } from 'vitest';
import { manualClock } from '../src/kernel/clock.js';
import { createLogger } from '../src/kernel/logger.js';
import { createLine } from '../src/queue/line.js';
import { startDoubtResolver } from '../src/service/doubt-resolver.js';
import { createJobQueues } from '../src/service/jobs.js';
import { createHandlerRegistry } from '../src/service/registry.js';
import { testDb } from './support/db.js';
import { redisUrl, testRedis } from './support/redis.js';
import { ticketRef } from '../src/kernel/ticket-ref.js';

/**
 * The doubt resolver and the outcome ledger. With Postgres away, its round goes past an outside
 * worker's item (its tickets wait: the ledger, which may hold their worker's answer, cannot be
 * read) to the items whose doubts need no Postgres: a webhook item's tickets are run again (the
 * ledger read of the first item ended the whole round, each round, for the whole outage). And a
 * blocked user's webhook ticket held in doubt ends with the end the ledger holds, if any.
 */
const t = testRedis();
const db = await testDb();
const conn = new Redis(redisUrl(), { maxRetriesPerRequest: null });
// A real client of a Postgres nobody listens for (connections refused).
const away = postgres('postgres://postgres@127.0.0.1:1/none', { max: 1, connect_timeout: 1, onnotice: () => {} });
afterAll(async () => {
  conn.disconnect();
  await away.end({ timeout: 0 });
});
const plain = { config: {}, capacity: null, abandonAfterMs: null, opensAt: null, closesAt: null, rejoin: 'any' as const };

describe('the doubt resolver and the outcome ledger', () => {
  it("runs a webhook item's doubts again behind an outside worker's item whose doubts wait", { timeout: 30_000 }, async () => {
    const clock = manualClock();
    const prefix = t.newPrefix();
    const line = createLine({ redis: t.redis, prefix, clock, cacheMs: 0 });
    const open = { mode: 'manual' as const, rate: null, maxInFlight: null };
    await line.definitions.define({ itemId: 'ext', handler: 'external', ...plain }, open, { reopen: false });
    await line.definitions.define({ itemId: 'wh', handler: 'webhook', ...plain, config: { url: 'http://127.0.0.1:2/x' } }, open, { reopen: false });
    for (const id of ['ext', 'wh']) {
      await line.tickets.join(id, 'u1', null);
      expect(await line.admissions.admit(id, 1, 1000)).toHaveLength(1);
      // Their daemon dies; the item closes; the leases run out: in doubt.
      await line.definitions.cut(id, 'closed');
    }
    clock.advance(2000);
    await line.admissions.sweep();
    // The outside worker's item first in the round.
    line.items.keepActive('ext', clock.now() + 60_000);
    line.items.keepActive('wh', clock.now() + 120_000);
    expect(await line.items.activeItemIds()).toEqual(['ext', 'wh']);
    // The views the resolver holds (a daemon's dispatcher reads them every round).
    for (const id of ['ext', 'wh']) expect((await line.items.item(id, { fresh: true }))?.snap.inDoubt).toBe(1);
    const jobs = createJobQueues(conn, { prefix: t.newPrefix(), attempts: 3, backoffMs: 100, concurrency: 1, lockDurationMs: 10_000, stalledIntervalMs: 5000, batch: 100 }, (err) => console.error("job queue error", err));
    const relaunched: string[] = [];
    const resolver = startDoubtResolver(
      { queue: line, handlers: createHandlerRegistry(), sql: away, pg: { up: false, markDown: () => {} }, jobs, log: createLogger('silent'), now: () => clock.now(), onResolved: (itemId, how) => void (how === 'relaunched' && relaunched.push(itemId)) },
      { everyMs: 50, graceMs: 0, dispatchLeaseMs: 30_000 },
    );
    for (const until = Date.now() + 10_000; !relaunched.length && Date.now() < until; ) await new Promise((r) => setTimeout(r, 50));
    await resolver.stop();
    await jobs.close();
    expect(relaunched).toContain('wh');
    // The outside worker's ticket still waits in doubt (its worker's answer may be in the ledger).
    expect(await line.admissions.doubts('ext', clock.now())).toHaveLength(1);
  });

  it('counts each ticket once when two daemons end the same doubts (each counted every ticket it asked about: 20 for 10)', { timeout: 30_000 }, async () => {
    const clock = manualClock();
    const line = createLine({ redis: t.redis, prefix: t.newPrefix(), clock, cacheMs: 0 });
    await line.definitions.define({ itemId: 'two', handler: 'external', ...plain }, { mode: 'manual', rate: null, maxInFlight: null }, { reopen: false });
    for (let i = 0; i < 10; i++) await line.tickets.join('two', `u${i}`, null);
    expect(await line.admissions.admit('two', 10, 1000)).toHaveLength(10);
    await line.definitions.cut('two', 'closed');
    clock.advance(2000);
    await line.admissions.sweep();
    line.items.keepActive('two', clock.now() + 60_000);
    expect((await line.items.item('two', { fresh: true }))?.snap.inDoubt).toBe(10);
    const counted = { cut: 0, sold: 0 };
    const jobs = createJobQueues(conn, { prefix: t.newPrefix(), attempts: 3, backoffMs: 100, concurrency: 1, lockDurationMs: 10_000, stalledIntervalMs: 5000, batch: 100 }, (err) => console.error("job queue error", err));
    const resolvers = [0, 1].map(() =>
      startDoubtResolver(
        { queue: line, handlers: createHandlerRegistry(), sql: db.sql, pg: { up: true, markDown: () => {} }, jobs, log: createLogger('silent'), now: () => clock.now(), onResolved: (_, how, n) => void (how !== 'relaunched' && (counted[how] += n)) },
        { everyMs: 20, graceMs: 0, dispatchLeaseMs: 30_000 },
      ),
    );
    for (const until = Date.now() + 10_000; (await line.admissions.doubts('two', clock.now())).length && Date.now() < until; ) await new Promise((r) => setTimeout(r, 20));
    // A few more rounds of both.
    await new Promise((r) => setTimeout(r, 200));
    for (const r of resolvers) await r.stop();
    await jobs.close();
    expect(await line.admissions.doubts('two', clock.now())).toHaveLength(0);
    expect(counted).toEqual({ cut: 10, sold: 0 });
  });

  it("ends a blocked user's webhook ticket held in doubt with the end the ledger holds (its run answered before a rollback), not blocked", { timeout: 30_000 }, async () => {
    const clock = manualClock();
    const line = createLine({ redis: t.redis, prefix: t.newPrefix(), clock, cacheMs: 0 });
    await line.definitions.define({ itemId: 'bw', handler: 'webhook', ...plain, config: { url: 'http://127.0.0.1:2/x' } }, { mode: 'manual', rate: null, maxInFlight: null }, { reopen: false });
    const id = (await line.tickets.join('bw', 'u1', null)).ticket.ticketId;
    expect(await line.admissions.admit('bw', 1, 1000)).toHaveLength(1);
    // Its run's answer is in the ledger (from before a rollback that brought the ticket back).
    await db.sql`insert into ticket_outcomes (ticket_id, item_id, user_id, status, reason, result, joined_at, admitted_at, finished_at) values (${ticketRef(id)}, 'bw', 'u1', 'succeeded', null, ${'{"order":"W9"}'}::jsonb, now(), now(), now())`;
    // Its lease runs out (back at the head), its user is blocked, and the next admission holds it in doubt.
    clock.advance(2000);
    await line.admissions.sweep();
    await line.definitions.blocks.set('bw', 'u1', 'item', true);
    expect(await line.admissions.admit('bw', 1, 1000)).toHaveLength(0);
    expect((await line.items.item('bw', { fresh: true }))?.snap.inDoubt).toBe(1);
    // No run of it can be left (its deadline and its run lease are past); the resolver's rounds kept its item active meanwhile.
    clock.advance(60_000);
    line.items.keepActive('bw');
    const jobs = createJobQueues(conn, { prefix: t.newPrefix(), attempts: 3, backoffMs: 100, concurrency: 1, lockDurationMs: 10_000, stalledIntervalMs: 5000, batch: 100 }, (err) => console.error("job queue error", err));
    const resolver = startDoubtResolver(
      { queue: line, handlers: createHandlerRegistry(), sql: db.sql, pg: { up: true, markDown: () => {} }, jobs, log: createLogger('silent'), now: () => clock.now() },
      { everyMs: 50, graceMs: 0, dispatchLeaseMs: 30_000 },
    );
    let view = await line.tickets.status(id);
    for (const until = Date.now() + 10_000; view.state === 'admitted' && Date.now() < until; view = await line.tickets.status(id)) await new Promise((r) => setTimeout(r, 50));
    await resolver.stop();
    await jobs.close();
    expect(view).toMatchObject({ state: 'succeeded', outcome: { status: 'succeeded', result: { order: 'W9' } } });
  });
});
