import { describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { ownRedis } from './support/redis-server.js';
import { joinAll, retrying503, userIds } from './support/joins.js';
import { whenDone } from './support/cleanup.js';
import { connectRedis } from '../src/infra/redis-client.js';
import { createLine } from '../src/queue/line.js';
import { createLogger } from '../src/kernel/logger.js';
import { systemClock } from '../src/kernel/clock.js';
import { itemKeys, subLineTag } from '../src/redis/keys.js';

const db = await testDb();
const redis = await ownRedis();
// The dispatch lease 60 s (default 8 s): a ticket held for it cannot finish within the 30 s the
// sale's end is waited for, whatever the machine's speed.
const { call: callOnce } = await inProcessDaemon({ prefix: 'fg:', databaseUrl: db.url, env: { REDIS_URL: redis.url, FLOODGATE_DISPATCH_LEASE_MS: '60000' } });
// Requests that meet the stall get a 503 and are asked again, as a client does.
const call = retrying503(callOnce);

// Redis held up for 0.8 s (SIGSTOP, then SIGCONT: a long fork, a slow disk, a noisy neighbour): the
// commands sent meanwhile are answered late, past the API's 500 ms command timeout. An admit
// answered so still admitted its tickets in Redis; when the daemon gave up on its reply, those
// tickets sat admitted with no job until their dispatch lease ran out (15 s).
const STALL_MS = 800;
const STALLS = 3;

describe('Redis stalled for 0.8 s, three times, mid-sale', () => {
  it('holds nobody for a dispatch lease: the sale ends seconds after the last stall, exactly the stock sold', { timeout: 90_000 }, async () => {
    const stock = 150;
    await call('PUT', '/v1/items/st', { handler: 'seckill', config: { stock }, gate: { mode: 'closed' } });
    const ids = (await joinAll((u) => call('POST', '/v1/items/st/tickets', { userId: u }, SVC), userIds(0, stock))).map((r) => r.body.ticketId as string);
    await call('PATCH', '/v1/items/st/gate', { mode: 'manual', rate: 50, maxInFlight: 20 });
    await waitFor(() => call('GET', '/v1/items/st').then((r) => r.body), (v) => v.counts?.succeeded >= 10);
    for (let i = 0; i < STALLS; i++) {
      redis.pause();
      await new Promise((r) => setTimeout(r, STALL_MS));
      redis.resume();
      await new Promise((r) => setTimeout(r, 300));
    }
    const resumedAt = Date.now();
    const views = await waitFor(
      () => Promise.all(ids.map((id) => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body))),
      (vs) => vs.every((v) => v.state === 'succeeded'),
      30_000,
    );
    const tookMs = Date.now() - resumedAt;
    expect(views.filter((v) => v.state !== 'succeeded').map((v) => `${v.state} ${v.ticketId}`)).toEqual([]);
    // What was left sells at 50/s (under 3 s; 10.5 s once on a machine running the suite twice as
    // slow); a ticket held for its 60 s dispatch lease shows here.
    expect(tookMs).toBeLessThan(25_000);
    const orders = await db.sql`select user_id from orders where item_id = 'st'`;
    expect(orders.length).toBe(stock);
    expect(new Set(orders.map((o) => o.user_id)).size).toBe(stock);
  });
});

describe("a split item's admission round answered late", () => {
  it('still hands out what Redis admitted: the sub-line admit reads its reply past the API timeout', { timeout: 30_000 }, async () => {
    const log = createLogger('silent');
    const api = await connectRedis({ url: redis.url }, 'api', log);
    const admit = await connectRedis({ url: redis.url }, 'admit', log);
    whenDone(() => (api.disconnect(), admit.disconnect()));
    const line = createLine({ redis: api, admitRedis: admit, prefix: 'stall-split:', clock: systemClock, cacheMs: 0 });
    await line.definitions.define({ itemId: 'sp', handler: 'external', config: {}, capacity: null, abandonAfterMs: null, opensAt: null, closesAt: null, rejoin: 'any', lines: 4 }, { mode: 'manual', rate: null, maxInFlight: null }, { reopen: false });
    for (let i = 0; i < 12; i++) await line.tickets.join('sp', `u${i}`, null);
    // The sub-lines' admit script is held up by a stall of Redis longer than the API's 500 ms,
    // whichever connection sends it (the stall starts as the command leaves).
    // (ioredis's auto-pipeline copies the command onto its pipeline and calls it there: only the
    // call on the connection itself stalls.)
    for (const conn of [api, admit] as unknown as Record<string, (this: unknown, ...a: unknown[]) => Promise<unknown>>[]) {
      const send = conn.splitAdmit;
      conn.splitAdmit = function (...a: unknown[]) {
        if (this === conn) {
          redis.pause();
          setTimeout(() => redis.resume(), STALL_MS);
        }
        return send.apply(this, a);
      };
    }
    const got = await line.admissions.admit('sp', 8, 15_000);
    expect(got.map((t) => t.userId)).toEqual(Array.from({ length: 8 }, (_, i) => `u${i}`));
    // Nothing admitted in Redis that the caller did not get.
    const leases = await Promise.all([0, 1, 2, 3].map((k) => api.zcard(itemKeys('stall-split:', subLineTag('sp', k)).leases)));
    expect(leases.reduce((a, b) => a + b, 0)).toBe(8);
  });
});
