import { Redis } from 'ioredis';
import postgres from 'postgres';
import { afterAll, describe, expect, it } from 'vitest';
import { manualClock } from '../src/kernel/clock.js';
import { createLogger } from '../src/kernel/logger.js';
import { createLine } from '../src/queue/line.js';
import { startDoubtResolver } from '../src/service/doubt-resolver.js';
import { createJobQueues } from '../src/service/jobs.js';
import { createHandlerRegistry } from '../src/service/registry.js';
import { redisUrl, testRedis } from './support/redis.js';

/**
 * With Postgres away, the doubt resolver's round goes past an outside worker's item (its tickets
 * wait: the outcome ledger, which may hold their worker's answer, cannot be read) to the items whose
 * doubts need no Postgres: a webhook item's tickets are run again. (The ledger read of the first
 * item ended the whole round, each round, for the whole outage.)
 */
const t = testRedis();
const conn = new Redis(redisUrl(), { maxRetriesPerRequest: null });
// A real client of a Postgres nobody listens for (connections refused).
const away = postgres('postgres://postgres@127.0.0.1:1/none', { max: 1, connect_timeout: 1, onnotice: () => {} });
afterAll(async () => {
  conn.disconnect();
  await away.end({ timeout: 0 });
});
const plain = { config: {}, capacity: null, abandonAfterMs: null, opensAt: null, closesAt: null, rejoin: 'any' as const };

describe('the doubt resolver while Postgres is away', () => {
  it("runs a webhook item's doubts again behind an outside worker's item whose doubts wait", { timeout: 30_000 }, async () => {
    const clock = manualClock();
    const prefix = t.newPrefix();
    const line = createLine({ redis: t.redis, prefix, clock, cacheMs: 0 });
    const open = { mode: 'manual' as const, rate: null, maxInFlight: null };
    await line.definitions.define({ itemId: 'ext', handler: 'external', ...plain }, open, { reopen: false });
    await line.definitions.define({ itemId: 'wh', handler: 'webhook', ...plain, config: { url: 'http://127.0.0.1:9/x' } }, open, { reopen: false });
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
    const jobs = createJobQueues(conn, { prefix: t.newPrefix(), attempts: 3, backoffMs: 100, concurrency: 1, lockDurationMs: 10_000, stalledIntervalMs: 5000, batch: 100 });
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
});
