import { afterAll, describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { proxyFor } from './support/proxy.js';
import { testRedis } from './support/redis.js';

/**
 * A pull reads the outcome ledger after admitting its tickets (admissions.dropHeldEnds: an end a
 * Redis rollback took back) under leases already running: a slow Postgres must not eat them. The
 * read is bounded (200 ms) and skipped while Postgres is known down; unread, the tickets go out.
 */
const { newPrefix } = testRedis();
const db = await testDb();
const { proxy, url } = await proxyFor(db.url);
const { call } = await inProcessDaemon({ prefix: newPrefix(), databaseUrl: url });
afterAll(() => proxy.close());

describe('external pull while Postgres is slow', () => {
  it('hands out a ticket whose lease is still alive', { timeout: 60_000 }, async () => {
    expect((await call('PUT', '/v1/items/px', { handler: 'external' })).status).toBe(201);
    const t = (await call('POST', '/v1/items/px/tickets', { userId: 'u1' }, SVC)).body.ticketId as string;
    proxy.delay(2000); // a 4 s round trip to Postgres (a silent one costs FLOODGATE_PG_TIMEOUT_MS, 15 s)
    try {
      const r = await call('POST', '/v1/items/px/pull', { max: 1, leaseMs: 2000 }, SVC);
      expect(r.status).toBe(200);
      const [p] = r.body.tickets;
      expect(p.ticketId).toBe(t);
      expect(Date.parse(p.leaseExpiresAt), 'the pulled lease is alive when the worker gets it').toBeGreaterThan(Date.now());
      const w = await call('POST', `/v1/tickets/${t}/outcome`, { leaseId: p.leaseId, status: 'succeeded' }, SVC);
      expect(w.status, JSON.stringify(w.body)).toBe(200);
    } finally {
      proxy.delay(0);
    }
  });
});
