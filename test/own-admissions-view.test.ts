import { describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { testRedis } from './support/redis.js';

/**
 * A ticket this daemon has just handed out reads as handed out here, whatever its view of the item
 * holds. A view is kept FLOODGATE_CACHE_MS, and one read after a join and before the pull placed
 * the pulled ticket in the line from memory: polled after its write-back, on the daemon that took
 * the write-back, it read `waiting`, place 1 (a flaky test: a machine slow enough that the pull
 * read the view afresh).
 */
const { newPrefix } = testRedis();
const db = await testDb();
// The system's clock, which the test moves on past the cache's time (nothing else waits on it).
let ahead = 0;
const clock = { now: () => Date.now() + ahead };
const { call } = await inProcessDaemon({ prefix: newPrefix(), databaseUrl: db.url, clock, env: { FLOODGATE_CACHE_MS: '5000' } });
const poll = async (id: string) => (await call('GET', `/v1/tickets/${id}`, undefined, null)).body;

describe("a pulled ticket's poll on the daemon that handed it out", () => {
  it('reads admitted, and its outcome once written back, from a view read before the pull', async () => {
    expect((await call('PUT', '/v1/items/own-pull', { handler: 'external' })).status).toBe(201);
    const ticketId = (await call('POST', '/v1/items/own-pull/tickets', { userId: 'alice' }, SVC)).body.ticketId as string;
    expect(await poll(ticketId)).toMatchObject({ state: 'waiting', position: 1 });
    // The view of the join's time runs out: the pull reads the item afresh (the ticket in it, still waiting).
    ahead += 5_001;
    const pulled = await call('POST', '/v1/items/own-pull/pull', { max: 1, leaseMs: 60_000 }, SVC);
    expect(pulled.body.tickets.map((t: { ticketId: string }) => t.ticketId)).toEqual([ticketId]);
    expect(await poll(ticketId)).toMatchObject({ state: 'admitted' }); // before: waiting, position 1
    const w = await call('POST', `/v1/tickets/${ticketId}/outcome`, { leaseId: pulled.body.tickets[0].leaseId, status: 'succeeded', result: { orderId: 'A1' } }, SVC);
    expect(w.body).toMatchObject({ state: 'succeeded' });
    expect(await poll(ticketId)).toMatchObject({ state: 'succeeded', outcome: { status: 'succeeded', result: { orderId: 'A1' } } });
  });
});
