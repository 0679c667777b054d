import { describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { testRedis } from './support/redis.js';

// Two daemons on one line, the second on a machine whose clock runs two minutes ahead.
const SKEW_MS = 120_000;
const { newPrefix } = testRedis();
const db = await testDb();
const prefix = newPrefix();
const a = await inProcessDaemon({ prefix, databaseUrl: db.url });
const b = await inProcessDaemon({ prefix, databaseUrl: db.url, clock: { now: () => Date.now() + SKEW_MS } });

describe('a daemon whose machine clock is wrong', () => {
  it("keeps Redis's time: it does not sweep another daemon's lease as expired, and stamps times as the others do", { timeout: 30_000 }, async () => {
    expect((await a.call('PUT', '/v1/items/skew', { handler: 'external', gate: { mode: 'manual', rate: 100 } })).status).toBe(201);
    const first = await waitFor(() => a.call('POST', '/v1/items/skew/tickets', { userId: 'u1' }, SVC), (r) => r.status === 202);
    expect(first.status).toBe(202);
    // A second user joins through the skewed daemon (so the item is active in its view and its
    // lease sweep visits it), stamped with the same time as the first.
    const joined = await waitFor(() => b.call('POST', '/v1/items/skew/tickets', { userId: 'u2' }, SVC), (r) => r.status === 202);
    expect(joined.status).toBe(202);
    expect(Math.abs(Date.parse(joined.body.createdAt) - Date.parse(first.body.createdAt))).toBeLessThan(5000);

    // An outside worker takes it through the other daemon, under a 60 s lease.
    const pulled = await waitFor(() => a.call('POST', '/v1/items/skew/pull', { max: 1, leaseMs: 60_000 }, SVC), (r) => r.body.tickets?.length === 1);
    const [ticket] = pulled.body.tickets;
    expect(ticket.ticketId).toBe(first.body.ticketId);
    // Four of the skewed daemon's lease sweeps (every 500 ms) go by: on its own clock this lease
    // ended a minute ago.
    await new Promise((r) => setTimeout(r, 2000));
    const view = (await b.call('GET', `/v1/tickets/${ticket.ticketId}`, undefined, null)).body;
    expect(view.state).toBe('admitted');
    const done = await a.call('POST', `/v1/tickets/${ticket.ticketId}/outcome`, { leaseId: ticket.leaseId, status: 'succeeded', result: { ref: 'w1' } }, SVC);
    expect(done.status).toBe(200);
    expect(done.body.state).toBe('succeeded');
  });
});
