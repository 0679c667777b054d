import { afterAll, describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { proxyFor } from './support/proxy.js';
import { testRedis } from './support/redis.js';

/**
 * A ticket whose state left Redis after its end was written (FLOODGATE_TICKET_STATE_TTL_MS) is
 * answered from the outcome ledger: with its result as it was shown (keys sorted; Postgres's
 * jsonb orders them shorter first), from memory once read (an end never changes: every poll asked
 * Postgres, and answered 503 while it was away), and within a bound while Postgres is silent (a
 * poll hung for the driver's 15 s; a review's run).
 */
const { newPrefix } = testRedis();
const db = await testDb();
const { proxy, url: viaProxy } = await proxyFor(db.url);
afterAll(() => proxy.close());

describe("a ticket answered from the ledger once its state left Redis", () => {
  it('shows its result as before, from memory once read, and 503 within seconds (not 15) while Postgres is silent', { timeout: 60_000 }, async () => {
    const { call } = await inProcessDaemon({ prefix: newPrefix(), databaseUrl: viaProxy, env: { FLOODGATE_TICKET_STATE_TTL_MS: '1000' } });
    expect((await call('PUT', '/v1/items/arch', { handler: 'external', gate: { mode: 'manual' } })).status).toBe(201);
    const ids = [];
    for (const u of ['a', 'b']) ids.push((await call('POST', '/v1/items/arch/tickets', { userId: u }, SVC)).body.ticketId as string);
    const pulled = (await call('POST', '/v1/items/arch/pull', { max: 2 }, SVC)).body.tickets as { ticketId: string; leaseId: string }[];
    for (const p of pulled) expect((await call('POST', `/v1/tickets/${p.ticketId}/outcome`, { leaseId: p.leaseId, status: 'succeeded', result: { bb: 1, c: 2 } }, SVC)).status).toBe(200);
    const live = (await call('GET', `/v1/tickets/${ids[0]}`, undefined, null)).body;
    expect(Object.keys(live.outcome.result)).toEqual(['bb', 'c']);
    await waitFor(() => db.sql`select 1 from ticket_outcomes where item_id = 'arch'`, (r) => r.length === 2);
    await new Promise((r) => setTimeout(r, 2500)); // the state's TTL after the ledger's ack
    const fromLedger = await call('GET', `/v1/tickets/${ids[0]}`, undefined, null);
    expect(fromLedger.status).toBe(200);
    expect(Object.keys(fromLedger.body.outcome.result)).toEqual(['bb', 'c']); // before: ['c', 'bb']
    expect(fromLedger.body).toMatchObject({ state: 'succeeded', outcome: live.outcome, updatedAt: live.updatedAt });

    proxy.silence();
    // Read before: answered from memory.
    expect((await call('GET', `/v1/tickets/${ids[0]}`, undefined, null)).status).toBe(200); // before: 503 after 15 s
    // Never read since its state left: Postgres's word is needed; 503 within the bound.
    const t0 = Date.now();
    const other = await call('GET', `/v1/tickets/${ids[1]}`, undefined, null);
    expect(other.status).toBe(503);
    expect(Date.now() - t0).toBeLessThan(8000); // before: ~15 s (the driver's own timeout)
    // (The silent connections closed, so the daemon's stop does not wait them out.)
    await proxy.close();
  });
});
