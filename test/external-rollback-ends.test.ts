import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { holdLock, testDb } from './support/db.js';
import { ownRedis } from './support/redis-server.js';

/**
 * Outside workers' tickets across a Redis rollback (a restart from a snapshot that lost the last
 * writes), and a worker's stale lease. A review of the external handler found each.
 */
const db = await testDb();
const server = await ownRedis();
const { call } = await inProcessDaemon({ prefix: 'fg:', databaseUrl: db.url, env: { REDIS_URL: server.url } });
type Pulled = { ticketId: string; leaseId: string; userId: string };
const pull = async (item: string, leaseMs: number): Promise<Pulled[]> => {
  const r = await call('POST', `/v1/items/${item}/pull`, { max: 1, leaseMs }, SVC);
  expect(r.status).toBe(200);
  return r.body.tickets;
};
const write = (t: Pulled, leaseId: string, outcome: Record<string, unknown>) => call('POST', `/v1/tickets/${t.ticketId}/outcome`, { leaseId, ...outcome }, SVC);
const retry = { status: 'failed', reason: 'busy', retry: true };
const poll = (id: string) => call('GET', `/v1/tickets/${id}`, undefined, null);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function externalItem(item: string, users: number) {
  expect((await call('PUT', `/v1/items/${item}`, { handler: 'external' })).status).toBe(201);
  const ids: string[] = [];
  for (let i = 0; i < users; i++) ids.push((await call('POST', `/v1/items/${item}/tickets`, { userId: `${item}-u${i}` }, SVC)).body.ticketId);
  return ids;
}

describe("an outside worker's tickets", () => {
  it('across a rollback: a close does not cancel a ticket whose later run the ledger holds succeeded, and a pull refused for an unread ledger leaves its user unable to cancel a ticket whose run may have acted', { timeout: 90_000 }, async () => {
    // Closed: a ticket whose earlier holder wrote back a retry (no effect), then another's run succeeded.
    const [closedT1] = await externalItem('xc', 3);
    const [a] = await pull('xc', 30_000);
    expect(a.ticketId).toBe(closedT1);
    expect((await write(a, a.leaseId, retry)).status).toBe(200);
    // Pulled: the ticket whose run, after the rollback, is unknown.
    const [pulledT1] = await externalItem('xp', 2);
    const admin = new Redis(server.url, { maxRetriesPerRequest: 1 });
    await admin.save();
    admin.disconnect();

    // (Seen by the daemon on the second item: served 1, which the rollback takes back.)
    expect((await pull('xp', 30_000))[0]!.ticketId).toBe(pulledT1);
    await waitFor(() => call('GET', '/v1/items/xp'), (r) => r.body.counts?.admitted === 1, 5_000);
    const [b] = await pull('xc', 30_000);
    expect(b.ticketId).toBe(closedT1);
    expect((await write(b, b.leaseId, { status: 'succeeded', result: { order: 'B-1' } })).status).toBe(200);
    await waitFor(() => db.sql`select 1 from ticket_outcomes where item_id = 'xc' and status = 'succeeded'`, (rows) => rows.length === 1, 20_000);

    await server.kill();
    await server.start();
    await waitFor(() => call('GET', '/readyz', undefined, null), (r) => r.status === 200, 20_000);
    // (The daemon reads the second item as the rollback left it, nothing admitted: it takes it as rolled back.)
    await waitFor(() => call('GET', '/v1/items/xp'), (r) => r.body.counts?.admitted === 0, 10_000);

    // 1. The close: the ticket at the head after its holder's retry is the ledger's, succeeded.
    expect((await call('DELETE', '/v1/items/xc')).status).toBe(200);
    const ended = await waitFor(() => poll(closedT1), (r) => r.status === 200 && !['waiting', 'admitted'].includes(r.body.state), 20_000);
    // (Before: `cancelled`, item_closed, while Postgres held its succeeded end.)
    expect(ended.body).toMatchObject({ state: 'succeeded', outcome: { status: 'succeeded', result: { order: 'B-1' } } });

    // 2. A worker pulls it under a short lease and says nothing: what that run did is unknown.
    const [w] = await pull('xp', 1000);
    expect(w.ticketId).toBe(pulledT1);
    await sleep(1500);
    // The next pull finds the ledger unreadable (Postgres slow after a failover): 503, tickets given back.
    const lock = await holdLock(db.sql, (t) => t`lock table ticket_outcomes in access exclusive mode`);
    try {
      expect((await call('POST', '/v1/items/xp/pull', { max: 1, leaseMs: 30_000 }, SVC)).status).toBe(503);
    } finally {
      await lock.release();
    }
    // Not cancellable (docs/api.md: a ticket handed out again whose lease ran out); before: 200, cancelled.
    const cancel = await call('DELETE', `/v1/tickets/${pulledT1}`, undefined, null);
    expect([cancel.status, cancel.body.error?.code]).toEqual([409, 'not_cancellable']);
    // (It reads `waiting`: the refusal says why, not "only a waiting ticket".)
    expect(cancel.body.error.message).toMatch(/ran before/);
    expect((await poll(pulledT1)).body.state).not.toBe('cancelled');
  });

  it("answers a lease that another lease replaced, and that ran out too, 409 lease_lost (it answered a retry written again 200, a repeat)", async () => {
    const [t] = await externalItem('xs', 1);
    const [first] = await pull('xs', 30_000);
    expect(first.ticketId).toBe(t);
    expect((await write(first, first.leaseId, retry)).status).toBe(200);
    const [second] = await pull('xs', 1000);
    expect(second.ticketId).toBe(t);
    await sleep(1500);
    for (const outcome of [retry, { status: 'succeeded' }]) {
      const r = await write(first, first.leaseId, outcome);
      expect([r.status, r.body.error?.code]).toEqual([409, 'lease_lost']);
    }
  });
});
