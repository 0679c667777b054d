import { describe, expect, it } from 'vitest';
import { itemKeys, itemsSetKey } from '../src/redis/keys.js';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { rollbackItem, snapshotItem, testRedis } from './support/redis.js';

/**
 * Redis restored from a snapshot older than an item's removal (retention archived its row a day
 * after its close, then dropped its keys; a daily RDB backup is older than that): the item's keys
 * come back, open, with units. Nothing looked at it — a start restores live rows only, the loss
 * check took Redis's items for live ones, the rollback check skips removed rows — and users bought
 * on an item its operator had closed (a review's run: a second order on a closed, archived item).
 * A daemon now closes such an item and drops its keys, as retention had left it.
 */
const { redis, newPrefix } = testRedis();
const db = await testDb();
const prefix = newPrefix();

/** Retention's removal (the row archived, the keys dropped), then Redis back at the snapshot. */
async function removedThenRolledBack(itemId: string, snap: Awaited<ReturnType<typeof snapshotItem>>) {
  await db.sql`update items set archived_at = now() where item_id = ${itemId}`;
  await redis.srem(itemsSetKey(prefix), itemId);
  await rollbackItem(redis, prefix, itemId, snap);
  await redis.sadd(itemsSetKey(prefix), itemId);
}

describe('an item Redis brings back after its removal', () => {
  it('is closed and dropped again, and sells nothing', { timeout: 60_000 }, async () => {
    const first = await inProcessDaemon({ prefix, databaseUrl: db.url });
    expect((await first.call('PUT', '/v1/items/gone', { handler: 'seckill', config: { stock: 3 } })).status).toBe(201);
    const t1 = (await first.call('POST', '/v1/items/gone/tickets', { userId: 'u1' }, SVC)).body.ticketId as string;
    await waitFor(() => first.call('GET', `/v1/tickets/${t1}`, undefined, null), (r) => r.body.state === 'succeeded');
    // The snapshot after the outcome ledger took the sale's entry off the done stream: one taken
    // in between holds it read and not acknowledged, which the next daemon claims only once it is
    // 30 s idle, and the keys are dropped after that (the item reads closed meanwhile). Seen in a
    // full run on a loaded machine: still 200 after the 10 s below.
    await waitFor(() => redis.xlen(itemKeys(prefix, 'gone').done), (n) => n === 0, 10_000);
    const snap = await snapshotItem(redis, prefix, 'gone'); // open, 2 units left
    expect((await first.call('DELETE', '/v1/items/gone')).status).toBe(200);
    await first.daemon.stop();
    await removedThenRolledBack('gone', snap);

    const second = await inProcessDaemon({ prefix, databaseUrl: db.url });
    const after = await waitFor(() => second.call('GET', '/v1/items/gone'), (r) => r.status === 404, 10_000);
    expect(after.status).toBe(404); // before: 200, `open`, 2 remaining
    const join = await second.call('POST', '/v1/items/gone/tickets', { userId: 'u2' }, SVC);
    expect(join.status).toBe(404); // before: 202, then an order
    expect((await db.sql`select user_id from orders where item_id = 'gone'`).map((r) => r.user_id)).toEqual(['u1']);
    // The buyer's ticket still answers its end, from Postgres.
    expect((await second.call('GET', `/v1/tickets/${t1}`, undefined, null)).body).toMatchObject({ state: 'succeeded' });
  });

  it("has none of its waiting tickets admitted before it is closed again, from a daemon's start", { timeout: 60_000 }, async () => {
    const first = await inProcessDaemon({ prefix, databaseUrl: db.url });
    // Tickets that wait in the snapshot with nothing holding them back once it comes back: a
    // pre-queue whose opening passes while no daemon runs.
    const opensAt = Date.now() + 2500;
    expect((await first.call('PUT', '/v1/items/gone2', { handler: 'seckill', config: { stock: 3 }, opensAt: new Date(opensAt).toISOString(), preQueue: { fromMs: 60_000 } })).status).toBe(201);
    const ids = [];
    for (const u of ['w1', 'w2']) ids.push((await first.call('POST', '/v1/items/gone2/tickets', { userId: u }, SVC)).body.ticketId as string);
    const snap = await snapshotItem(redis, prefix, 'gone2');
    expect((await first.call('DELETE', '/v1/items/gone2')).status).toBe(200);
    await first.daemon.stop();
    await removedThenRolledBack('gone2', snap);
    await new Promise((r) => setTimeout(r, Math.max(0, opensAt + 200 - Date.now())));

    const second = await inProcessDaemon({ prefix, databaseUrl: db.url });
    await waitFor(() => second.call('GET', '/v1/items/gone2'), (r) => r.status === 404, 10_000);
    // Time for a dispatcher round and a sale, had either ticket been admitted.
    await new Promise((r) => setTimeout(r, 1500));
    expect(await db.sql`select user_id from orders where item_id = 'gone2'`).toEqual([]); // before: orders for w1 and w2 (admitted a second before the loss check)
    for (const id of ids) expect((await second.call('GET', `/v1/tickets/${id}`, undefined, null)).body).toMatchObject({ state: 'cancelled' });
  });
});
