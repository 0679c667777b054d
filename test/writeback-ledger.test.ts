import { describe, expect, it } from 'vitest';
import { ticketRef } from '../src/kernel/ticket-ref.js';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { rollbackItem, snapshotItem, testRedis } from './support/redis.js';

/**
 * An outside worker's write-back against what the outcome ledger holds. After a Redis rollback
 * took back a written outcome (and the lease came back to life with it), a second, different
 * answer under the old lease was taken: `200`, the user told `rejected` after `succeeded`, and
 * `succeeded` again once the ticket's state left Redis (the ledger keeps its first row).
 */
const { redis, newPrefix } = testRedis();
const db = await testDb();
const prefix = newPrefix();
const { call } = await inProcessDaemon({ prefix, databaseUrl: db.url });
const row = async (id: string) => (await db.sql`select status, reason, result from ticket_outcomes where ticket_id = ${ticketRef(id)}`)[0];
const poll = async (id: string) => (await call('GET', `/v1/tickets/${id}`, undefined, null)).body;

/** An external item with one ticket pulled: its id and lease. */
async function pulled(itemId: string) {
  expect((await call('PUT', `/v1/items/${itemId}`, { handler: 'external' })).status).toBe(201);
  const ticketId = (await call('POST', `/v1/items/${itemId}/tickets`, { userId: 'alice' }, SVC)).body.ticketId as string;
  const [p] = (await call('POST', `/v1/items/${itemId}/pull`, { max: 1, leaseMs: 60_000 }, SVC)).body.tickets;
  return { ticketId, leaseId: p.leaseId as string };
}
const writeBack = (ticketId: string, body: object) => call('POST', `/v1/tickets/${ticketId}/outcome`, body, SVC);

describe('a write-back after a Redis rollback took back an outcome the ledger holds', () => {
  for (const again of ['another answer', 'the same answer, its keys in another order'] as const) {
    it(`ends the ticket with the ledger's outcome: ${again}`, { timeout: 30_000 }, async () => {
      const item = again === 'another answer' ? 'rb-other' : 'rb-same';
      const { ticketId, leaseId } = await pulled(item);
      const snap = await snapshotItem(redis, prefix, item);
      expect((await writeBack(ticketId, { leaseId, status: 'succeeded', result: { orderId: 'A1', n: 1 } })).status).toBe(200);
      await waitFor(() => row(ticketId), (r) => !!r);
      // Redis loses its last second: the ticket is admitted again, its lease live.
      await rollbackItem(redis, prefix, item, snap);
      expect((await poll(ticketId)).state).toBe('admitted');
      const w = await writeBack(ticketId, again === 'another answer' ? { leaseId, status: 'rejected', reason: 'changed_mind' } : { leaseId, status: 'succeeded', result: { n: 1, orderId: 'A1' } });
      expect(w.status).toBe(again === 'another answer' ? 409 : 200); // before: 200, and the user told `rejected`
      expect(await poll(ticketId)).toMatchObject({ state: 'succeeded', outcome: { status: 'succeeded', result: { orderId: 'A1', n: 1 } } });
      expect(await row(ticketId)).toMatchObject({ status: 'succeeded', result: { orderId: 'A1', n: 1 } });
    });
  }
});

describe('write-backs that are the same outcome', () => {
  it('takes the same result in another key order as a repeat, and a null result as none', async () => {
    const a = await pulled('same-keys');
    expect((await writeBack(a.ticketId, { leaseId: a.leaseId, status: 'succeeded', result: { x: 1, y: { b: 2, a: [{ d: 1, c: 2 }] } } })).status).toBe(200);
    const again = await writeBack(a.ticketId, { leaseId: a.leaseId, status: 'succeeded', result: { y: { a: [{ c: 2, d: 1 }], b: 2 }, x: 1 } });
    expect(again.status).toBe(200); // before: 409 conflict
    expect((await writeBack(a.ticketId, { leaseId: a.leaseId, status: 'succeeded', result: { x: 2 } })).status).toBe(409);

    const b = await pulled('null-result');
    expect((await writeBack(b.ticketId, { leaseId: b.leaseId, status: 'succeeded', result: null })).status).toBe(200);
    const view = await poll(b.ticketId);
    expect(view.outcome).toEqual({ status: 'succeeded' }); // before: `result: null` here, none once read from Postgres
    await waitFor(() => row(b.ticketId), (r) => !!r);
    expect((await row(b.ticketId)).result).toBeNull();
  });
});
