import { describe, expect, it } from 'vitest';
import { itemKeys } from '../src/redis/keys.js';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { proxyFor } from './support/proxy.js';
import { whenDone } from './support/cleanup.js';
import { rollbackItem, snapshotItem, testRedis } from './support/redis.js';

/**
 * Redis back at a copy from before a sale's admissions (a restart from an older AOF or RDB): the
 * buyers' tickets wait in the line again, while Postgres holds their orders. The cut that ends
 * the line then — the stock count from Postgres says sold out, or an operator closes the item —
 * ended them with everyone else: `rejected`/`sold_out` (or `cancelled`) for a user with an order,
 * and for those whose `succeeded` row the ledger had not written yet, a `rejected` row next to the
 * order (a review's chaos runs: 39 and 41 buyers of 200). A cut now holds such tickets in doubt,
 * and they end with Postgres's word: `succeeded`, with their own order.
 */
const { redis, newPrefix } = testRedis();
const db = await testDb();
const env = { FLOODGATE_DOUBT_GRACE_MS: '300' };

type View = { state: string; userId: string; reason?: string; outcome?: { status: string; reason?: string; result?: { orderId?: string } } };

/** Joins `users` behind a closed gate and takes the item's snapshot (all of them waiting), then sells `stock` of them and waits until every ticket ended and the ledger drained. */
async function soldThenSnapshot(call: Awaited<ReturnType<typeof inProcessDaemon>>['call'], prefix: string, itemId: string, users: string[]) {
  const ids: string[] = [];
  for (const u of users) ids.push((await call('POST', `/v1/items/${itemId}/tickets`, { userId: u }, SVC)).body.ticketId as string);
  const snap = await snapshotItem(redis, prefix, itemId);
  expect((await call('PATCH', `/v1/items/${itemId}/gate`, { mode: 'manual', rate: 100, maxInFlight: 10 })).status).toBe(200);
  await waitFor(() => Promise.all(ids.map((id) => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body as View))), (vs) => vs.every((v) => v.state === 'succeeded' || v.state === 'rejected'));
  await waitFor(() => redis.xlen(itemKeys(prefix, itemId).done), (n) => n === 0);
  // The gate closed again (operators' writes outlive a rollback: the snapshot's closed gate stays
  // closed), so the buyers the rollback puts back in line wait there until the line is cut.
  expect((await call('PATCH', `/v1/items/${itemId}/gate`, { mode: 'closed' })).status).toBe(200);
  return { ids, snap };
}

/** Polls every ticket until each is terminal and stays so, keeping every state each one read. */
async function watchToTheEnd(call: Awaited<ReturnType<typeof inProcessDaemon>>['call'], ids: string[]) {
  const seen = new Map<string, string[]>(ids.map((id) => [id, []]));
  const last = new Map<string, View>();
  const deadline = Date.now() + 30_000;
  let settledRounds = 0;
  while (Date.now() < deadline && settledRounds < 5) {
    for (const id of ids) {
      const v = (await call('GET', `/v1/tickets/${id}`, undefined, null)).body as View;
      seen.get(id)!.push(v.state === 'rejected' || v.state === 'cancelled' ? `${v.state}/${v.outcome?.reason ?? v.reason}` : v.state);
      last.set(id, v);
    }
    settledRounds = [...last.values()].every((v) => v.state === 'succeeded' || v.state === 'rejected' || v.state === 'cancelled') ? settledRounds + 1 : 0;
    await new Promise((r) => setTimeout(r, 100));
  }
  return { seen, last };
}

async function checkAgainstPostgres(itemId: string, ids: string[], buyers: string[], seen: Map<string, string[]>, last: Map<string, View>, othersEnd: string) {
  const orders = new Map((await db.sql`select order_id::text as id, user_id from orders where item_id = ${itemId}`).map((o) => [o.user_id as string, o.id as string]));
  expect([...orders.keys()].sort()).toEqual([...buyers].sort());
  for (const id of ids) {
    const v = last.get(id)!;
    if (buyers.includes(v.userId)) {
      // Never told anything but a wait and its sale.
      expect(seen.get(id)!.filter((s) => s !== 'waiting' && s !== 'admitted' && s !== 'succeeded'), `${v.userId}: ${seen.get(id)!.join(' ')}`).toEqual([]);
      expect(v).toMatchObject({ state: 'succeeded', outcome: { result: { orderId: orders.get(v.userId) } } });
    } else {
      expect(seen.get(id)!.at(-1), v.userId).toBe(othersEnd);
    }
  }
  // And the ledger says the same as the orders.
  await waitFor(() => db.sql`select count(*)::int as n from ticket_outcomes where item_id = ${itemId}`.then((r) => r[0].n as number), (n) => n === ids.length);
  const rows = await db.sql`select user_id, status from ticket_outcomes where item_id = ${itemId}`;
  for (const r of rows) expect([r.user_id, r.status]).toEqual([r.user_id, buyers.includes(r.user_id as string) ? 'succeeded' : othersEnd.split('/')[0]]);
}

describe('a cut after Redis went back to before a sale', () => {
  it("ends the tickets whose orders Postgres holds succeeded, not sold out (a daemon started after the rollback, whose stock count cuts the line)", { timeout: 90_000 }, async () => {
    const prefix = newPrefix();
    const first = await inProcessDaemon({ prefix, databaseUrl: db.url, env });
    await first.define('rbc', { handler: 'seckill', config: { stock: 3 }, gate: { mode: 'closed' } });
    const users = ['u1', 'u2', 'u3', 'u4', 'u5', 'u6'];
    const { ids, snap } = await soldThenSnapshot(first.call, prefix, 'rbc', users);
    await first.daemon.stop();
    // Back to all six waiting, 3 units left, the gate closed; Postgres holds three orders.
    await rollbackItem(redis, prefix, 'rbc', snap);

    const second = await inProcessDaemon({ prefix, databaseUrl: db.url, env });
    const { seen, last } = await watchToTheEnd(second.call, ids);
    // Before: u1–u3 read rejected/sold_out (their orders in Postgres) from the start's stock count on.
    await checkAgainstPostgres('rbc', ids, ['u1', 'u2', 'u3'], seen, last, 'rejected/sold_out');
  });

  it('ends them succeeded when an operator closes the item after the rollback, and a later joiner cancelled', { timeout: 90_000 }, async () => {
    const prefix = newPrefix();
    const first = await inProcessDaemon({ prefix, databaseUrl: db.url, env });
    // Stock to spare: the start's count sets the counter to the unit left, and cuts nothing.
    await first.define('rbd', { handler: 'seckill', config: { stock: 5 }, gate: { mode: 'closed' } });
    const { ids, snap } = await soldThenSnapshot(first.call, prefix, 'rbd', ['v1', 'v2', 'v3', 'v4']);
    await first.daemon.stop();
    await rollbackItem(redis, prefix, 'rbd', snap);
    const second = await inProcessDaemon({ prefix, databaseUrl: db.url, env });
    const late = (await second.call('POST', '/v1/items/rbd/tickets', { userId: 'v5' }, SVC)).body.ticketId as string;
    expect((await second.call('DELETE', '/v1/items/rbd')).status).toBe(200);
    const { seen, last } = await watchToTheEnd(second.call, [...ids, late]);
    // Before: v1–v4 read cancelled/item_closed, their orders in Postgres.
    await checkAgainstPostgres('rbd', [...ids, late], ['v1', 'v2', 'v3', 'v4'], seen, last, 'cancelled/item_closed');
  });

  it("ends an outside worker's tickets the ledger holds as succeeded with that end, not the close's", { timeout: 90_000 }, async () => {
    const prefix = newPrefix();
    const first = await inProcessDaemon({ prefix, databaseUrl: db.url, env });
    await first.define('rbx', { handler: 'external' });
    const ids: string[] = [];
    for (const u of ['x1', 'x2', 'x3']) ids.push((await first.call('POST', '/v1/items/rbx/tickets', { userId: u }, SVC)).body.ticketId as string);
    const snap = await snapshotItem(redis, prefix, 'rbx');
    const pulled = (await first.call('POST', '/v1/items/rbx/pull', { max: 3, leaseMs: 60_000 }, SVC)).body.tickets as { ticketId: string; leaseId: string }[];
    expect(pulled).toHaveLength(3);
    for (const p of pulled) expect((await first.call('POST', `/v1/tickets/${p.ticketId}/outcome`, { leaseId: p.leaseId, status: 'succeeded', result: { done: p.ticketId.slice(-6) } }, SVC)).status).toBe(200);
    await waitFor(() => redis.xlen(itemKeys(prefix, 'rbx').done), (n) => n === 0);
    await waitFor(() => db.sql`select count(*)::int as n from ticket_outcomes where item_id = 'rbx'`.then((r) => r[0].n as number), (n) => n === 3);
    await first.daemon.stop();
    await rollbackItem(redis, prefix, 'rbx', snap);

    const second = await inProcessDaemon({ prefix, databaseUrl: db.url, env });
    expect((await second.call('DELETE', '/v1/items/rbx')).status).toBe(200);
    const { seen, last } = await watchToTheEnd(second.call, ids);
    for (const id of ids) {
      // Before: cancelled/item_closed, the worker's succeeded in the ledger.
      expect(seen.get(id)!.filter((st) => st !== 'waiting' && st !== 'admitted' && st !== 'succeeded'), seen.get(id)!.join(' ')).toEqual([]);
      expect(last.get(id)).toMatchObject({ state: 'succeeded', outcome: { result: { done: id.slice(-6) } } });
    }
    expect((await db.sql`select status from ticket_outcomes where item_id = 'rbx'`).map((r) => r.status)).toEqual(['succeeded', 'succeeded', 'succeeded']);
  });

  it("leaves a reserved order's ticket told succeeded succeeded after its order was released (the contract), not cancelled by a close", { timeout: 90_000 }, async () => {
    const prefix = newPrefix();
    const first = await inProcessDaemon({ prefix, databaseUrl: db.url, env });
    await first.define('rbr', { handler: 'seckill', config: { stock: 3, reserveMs: 300 }, gate: { mode: 'closed' } });
    const { ids, snap } = await soldThenSnapshot(first.call, prefix, 'rbr', ['r1', 'r2', 'r3']);
    const told = await Promise.all(ids.map((id) => first.call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body as View)));
    expect(told.map((v) => v.state)).toEqual(['succeeded', 'succeeded', 'succeeded']);
    // Unpaid: the sweep releases all three orders (their units back on sale).
    await waitFor(() => db.sql`select count(*)::int as n from orders where item_id = 'rbr' and status = 'released'`.then((r) => r[0].n as number), (n) => n === 3);
    await first.daemon.stop();
    await rollbackItem(redis, prefix, 'rbr', snap);

    const second = await inProcessDaemon({ prefix, databaseUrl: db.url, env });
    expect((await second.call('DELETE', '/v1/items/rbr')).status).toBe(200);
    const { seen, last } = await watchToTheEnd(second.call, ids);
    ids.forEach((id, i) => {
      // Before: cancelled/item_closed (the released orders were not looked at), or, held in doubt,
      // rejected/reservation_released while a daemon that saw the rollback answered succeeded.
      expect(seen.get(id)!.filter((st) => st !== 'waiting' && st !== 'admitted' && st !== 'succeeded'), seen.get(id)!.join(' ')).toEqual([]);
      expect(last.get(id)).toMatchObject({ state: 'succeeded', outcome: { result: { orderId: told[i].outcome!.result!.orderId } } });
    });
  });

  it("waits to cut the window's end while Postgres cannot say who bought, then ends the buyers succeeded", { timeout: 90_000 }, async () => {
    const prefix = newPrefix();
    const { proxy, url } = await proxyFor(db.url);
    whenDone(() => proxy.close());
    const first = await inProcessDaemon({ prefix, databaseUrl: url, env });
    const closesAt = Date.now() + 10_000;
    await first.define('rbw', { handler: 'seckill', config: { stock: 5 }, gate: { mode: 'closed' }, closesAt: new Date(closesAt).toISOString() });
    const { ids, snap } = await soldThenSnapshot(first.call, prefix, 'rbw', ['w1', 'w2', 'w3']);
    await first.daemon.stop();
    await rollbackItem(redis, prefix, 'rbw', snap);
    const second = await inProcessDaemon({ prefix, databaseUrl: url, env });
    // Postgres away over the window's end, and a second after it.
    await proxy.cut();
    expect(Date.now()).toBeLessThan(closesAt);
    await new Promise((r) => setTimeout(r, closesAt + 1500 - Date.now()));
    await proxy.restore();
    const { seen, last } = await watchToTheEnd(second.call, ids);
    // Before: cancelled/closed, cut at the window's end without a look at the orders.
    await checkAgainstPostgres('rbw', ids, ['w1', 'w2', 'w3'], seen, last, 'none');
  });
});
