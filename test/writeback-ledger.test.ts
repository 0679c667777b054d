import { describe, expect, it } from 'vitest';
import { ticketRef } from '../src/kernel/ticket-ref.js';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { recordingDownstream } from './support/downstream.js';
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
      // (Keys Postgres's jsonb keeps in another order than sorted: by length, `aa` after `b`.)
      expect((await writeBack(ticketId, { leaseId, status: 'succeeded', result: { orderId: 'A1', n: 1, aa: 2, b: 3 } })).status).toBe(200);
      await waitFor(() => row(ticketId), (r) => !!r);
      // Redis loses its last second: the ticket is admitted again, its lease live.
      await rollbackItem(redis, prefix, item, snap);
      expect((await poll(ticketId)).state).toBe('admitted');
      const same = { leaseId, status: 'succeeded', result: { b: 3, n: 1, aa: 2, orderId: 'A1' } };
      const w = await writeBack(ticketId, again === 'another answer' ? { leaseId, status: 'rejected', reason: 'changed_mind' } : same);
      expect(w.status).toBe(again === 'another answer' ? 409 : 200); // before: 200, and the user told `rejected`
      // The same answer once more: a repeat (the ledger's outcome put back in the key order kept).
      if (again !== 'another answer') expect((await writeBack(ticketId, same)).status).toBe(200);
      expect(await poll(ticketId)).toMatchObject({ state: 'succeeded', outcome: { status: 'succeeded', result: { orderId: 'A1', n: 1, aa: 2, b: 3 } } });
      expect(await row(ticketId)).toMatchObject({ status: 'succeeded', result: { orderId: 'A1', n: 1, aa: 2, b: 3 } });
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

/**
 * Rolls the item back to `snap` and waits until the daemon sees its `waiting` tickets again (the
 * counters gone back), then holds the outcome ledger's table locked for 1.5 s: the promise of the
 * lock's end (`held`), once the lock is taken.
 */
async function rolledBackLedgerLocked(item: string, snap: Awaited<ReturnType<typeof snapshotItem>>, waiting: number) {
  await rollbackItem(redis, prefix, item, snap);
  await waitFor(() => call('GET', `/v1/items/${item}`), (r) => r.body.counts.waiting === waiting);
  let locked!: () => void;
  const isLocked = new Promise<void>((r) => (locked = r));
  const held = db.sql.begin(async (tx) => {
    await tx`lock table ticket_outcomes in access exclusive mode`;
    locked();
    await new Promise((r) => setTimeout(r, 1500));
  });
  await isLocked;
  return { held };
}

describe('a pull after a Redis rollback while the outcome ledger cannot be read', () => {
  it("hands out none of the tickets (503) and puts them back; read again, they end with the ledger's outcomes", { timeout: 30_000 }, async () => {
    const item = 'rb-pull';
    expect((await call('PUT', `/v1/items/${item}`, { handler: 'external' })).status).toBe(201);
    const ids: string[] = [];
    for (const u of ['a', 'b', 'c']) ids.push((await call('POST', `/v1/items/${item}/tickets`, { userId: u }, SVC)).body.ticketId);
    const snap = await snapshotItem(redis, prefix, item);
    const pulled = (await call('POST', `/v1/items/${item}/pull`, { max: 10, leaseMs: 60_000 }, SVC)).body.tickets;
    expect(pulled).toHaveLength(3);
    for (const p of pulled) expect((await writeBack(p.ticketId, { leaseId: p.leaseId, status: 'succeeded', result: { done: p.ticketId } })).status).toBe(200);
    for (const id of ids) await waitFor(() => row(id), (r) => !!r);
    await waitFor(() => call('GET', `/v1/items/${item}`), (r) => r.body.counts.succeeded === 3);
    // A failover loses those writes: the three wait again, and the daemon sees the counters go back;
    // Postgres is slow for a moment: the ledger's look runs out of time.
    const { held } = await rolledBackLedgerLocked(item, snap, 3);
    const refused = await call('POST', `/v1/items/${item}/pull`, { max: 10 }, SVC);
    expect(refused.status).toBe(503); // before: 200, the three handed out again
    await held;
    expect((await call('GET', `/v1/items/${item}`)).body.counts).toMatchObject({ waiting: 3, admitted: 0 });
    const again = await call('POST', `/v1/items/${item}/pull`, { max: 10 }, SVC);
    expect([again.status, again.body.tickets]).toEqual([200, []]);
    for (const id of ids) expect(await poll(id)).toMatchObject({ state: 'succeeded', outcome: { result: { done: id } } });
  });
});

describe('a webhook job after a Redis rollback while the outcome ledger cannot be read', () => {
  it("calls none of the tickets whose end the ledger holds: held until it can be read, then ended with it", { timeout: 30_000 }, async () => {
    const { url, seen } = await recordingDownstream((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}'));
    const item = 'rb-hook';
    expect((await call('PUT', `/v1/items/${item}`, { handler: 'webhook', config: { url, timeoutMs: 5000 }, gate: { mode: 'closed' } })).status).toBe(201);
    const ids: string[] = [];
    for (const u of ['a', 'b']) ids.push((await call('POST', `/v1/items/${item}/tickets`, { userId: u }, SVC)).body.ticketId);
    const snap = await snapshotItem(redis, prefix, item);
    expect((await call('PATCH', `/v1/items/${item}/gate`, { mode: 'manual' })).status).toBe(200);
    for (const id of ids) await waitFor(() => row(id), (r) => !!r);
    expect(seen).toHaveLength(2);
    await waitFor(() => call('GET', `/v1/items/${item}`), (r) => r.body.counts.succeeded === 2);
    // A failover loses those writes (the gate's opening too), seen by the daemon; Postgres slow.
    const { held } = await rolledBackLedgerLocked(item, snap, 2);
    // Opened again while Postgres is slow: the job's look at the ledger runs out of time.
    expect((await call('PATCH', `/v1/items/${item}/gate`, { mode: 'manual', rate: 50 })).status).toBe(200);
    await held;
    // Ended in Redis, by the job (its polls may read the ledger's end before: the daemon saw the rollback).
    await waitFor(() => call('GET', `/v1/items/${item}`), (r) => r.body.counts.succeeded === 2 && r.body.counts.waiting + r.body.counts.admitted === 0, 15_000);
    expect(seen).toHaveLength(2); // before: 4, both called again
    for (const id of ids) expect((await poll(id)).state).toBe('succeeded');
  });
});
