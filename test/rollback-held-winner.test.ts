import { describe, expect, it } from 'vitest';
import { ticketRef } from '../src/kernel/ticket-ref.js';
import { inProcessDaemon, recordingLogger, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { ownRedis } from './support/redis-server.js';

/**
 * An item held on its reservations (every unit sold or reserved) runs no sale and is not cut. A
 * Redis rolled back past a winner's admission there (a restart from a snapshot taken before it)
 * has the winner's ticket waiting in the line again while Postgres holds their reservation, and no
 * unit comes back to admit them: they read `waiting` until the reservation ran out, then
 * `rejected` / `reservation_released`, and the unit went to the next in line — a unit they had won,
 * never told they held it. Such a ticket is now taken out of the line and ends with its order.
 *
 * Played for real: a Redis of the test's own, saved (SAVE) while the winner waits behind a reserved
 * unit, then the unit released to them, then Redis killed and started again from the save.
 */
const db = await testDb();
const server = await ownRedis();
const env = { REDIS_URL: server.url, FLOODGATE_DOUBT_GRACE_MS: '300' };

type View = { state: string; reason?: string; position?: number; outcome?: { status: string; reason?: string; result?: { orderId?: string; reservedUntil?: string } } };

/**
 * zed reserves the item's one unit; amy, then bob, wait behind it; Redis is saved; zed's order is
 * released, and amy's ticket buys the unit (reserved). Returns the tickets and amy's order.
 */
async function amyWinsAfterTheSave(call: Awaited<ReturnType<typeof inProcessDaemon>>['call'], define: Awaited<ReturnType<typeof inProcessDaemon>>['define'], itemId: string) {
  // (One line: an item split into sub-lines takes no reservations, so it is never held.)
  await define(itemId, { handler: 'seckill', config: { stock: 1, reserveMs: 600_000 } });
  const poll = (id: string) => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body as View);
  const join = async (userId: string) => (await call('POST', `/v1/items/${itemId}/tickets`, { userId }, SVC)).body.ticketId as string;
  const zed = await join('zed');
  const zedOrder = (await waitFor(() => poll(zed), (v) => v.state === 'succeeded')).outcome!.result!.orderId!;
  const amy = await join('amy');
  const bob = await join('bob');
  expect((await waitFor(() => poll(amy), (v) => v.reason === 'awaiting_returns')).reason).toBe('awaiting_returns');
  await server.admin((r) => r.save());
  // After the save: zed's reservation released, its unit bought (reserved) by amy.
  expect((await call('POST', `/v1/orders/${zedOrder}/release`, undefined, SVC)).status).toBe(200);
  const won = await waitFor(() => poll(amy), (v) => v.state === 'succeeded');
  expect(won).toMatchObject({ state: 'succeeded', outcome: { result: { orderId: expect.any(String), reservedUntil: expect.any(String) } } });
  await waitFor(() => db.sql`select status from ticket_outcomes where ticket_id = ${ticketRef(amy)}`.then((r) => r[0]?.status ?? null), (s) => s === 'succeeded');
  expect((await poll(bob)).state).toBe('waiting');
  return { amy, bob, amyOrder: won.outcome!.result!.orderId! };
}

/** Polls `id` until `ok`, keeping each state it read (a rejected or cancelled one with its reason), once per run of polls that read it. */
async function watch(poll: (id: string) => Promise<View>, id: string, ok: (v: View) => boolean, ms = 30_000) {
  const seen: string[] = [];
  const v = await waitFor(
    async () => {
      const got = await poll(id);
      const state = got.state === 'rejected' || got.state === 'cancelled' ? `${got.state}/${got.outcome?.reason}` : got.state;
      if (seen.at(-1) !== state) seen.push(state);
      return got;
    },
    ok,
    ms,
  );
  return { v, seen };
}

/** The winner reads her reservation, confirms it, the unit never goes to bob, and Postgres agrees. */
async function checkAfterRollback(call: Awaited<ReturnType<typeof inProcessDaemon>>['call'], itemId: string, t: { amy: string; bob: string; amyOrder: string }, logs: () => string) {
  const poll = (id: string) => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body as View);
  // Before: `waiting` (awaiting_returns) for as long as her reservation lasted (10 minutes here).
  const { v, seen } = await watch(poll, t.amy, (v) => v.state === 'succeeded');
  expect(v, `amy read ${seen.join(' ')}; ${logs()}`).toMatchObject({ state: 'succeeded', outcome: { status: 'succeeded', result: { orderId: t.amyOrder, reservedUntil: expect.any(String) } } });
  expect(seen.filter((s) => s !== 'waiting' && s !== 'admitted' && s !== 'succeeded'), seen.join(' ')).toEqual([]);
  // The unit stays hers: bob still waits, with no order.
  expect(await poll(t.bob)).toMatchObject({ state: 'waiting', reason: 'awaiting_returns' });
  expect((await db.sql`select count(*)::int as n from orders where item_id = ${itemId} and user_id = 'bob'`)[0].n).toBe(0);
  // She can confirm it (paid): every unit is then paid for, and bob is told sold out.
  expect((await call('POST', `/v1/orders/${t.amyOrder}/confirm`, undefined, SVC)).body).toEqual({ orderId: t.amyOrder, status: 'confirmed' });
  expect((await watch(poll, t.bob, (v) => v.state !== 'waiting')).v).toMatchObject({ state: 'rejected', outcome: { reason: 'sold_out' } });
  expect(await poll(t.amy)).toMatchObject({ state: 'succeeded', outcome: { result: { orderId: t.amyOrder } } });
  // Postgres: one order per user, amy's confirmed, zed's released, the one unit sold once.
  const orders = await db.sql`select user_id, status, order_id::text as id from orders where item_id = ${itemId} order by user_id`;
  expect(orders.map((o) => [o.user_id, o.status])).toEqual([
    ['amy', 'confirmed'],
    ['zed', 'released'],
  ]);
  expect(orders[0].id).toBe(t.amyOrder);
  expect((await db.sql`select total, sold, reserved from item_stock where item_id = ${itemId}`)[0]).toEqual({ total: 1, sold: 1, reserved: 0 });
  // And the ledger: amy succeeded with her order (once), bob rejected.
  await waitFor(() => db.sql`select count(*)::int as n from ticket_outcomes where item_id = ${itemId}`.then((r) => r[0].n as number), (n) => n === 3);
  const ends = await db.sql`select user_id, status, reason, result from ticket_outcomes where item_id = ${itemId} order by user_id`;
  expect(ends.map((e) => [e.user_id, e.status, e.reason ?? null])).toEqual([
    ['amy', 'succeeded', null],
    ['bob', 'rejected', 'sold_out'],
    ['zed', 'succeeded', null],
  ]);
  expect(ends[0].result).toMatchObject({ orderId: t.amyOrder });
}

describe('a Redis rollback past the admission of a held item’s winner', () => {
  it('a daemon started after it takes her ticket out of the line: she reads her reservation, confirms it, and the unit stays hers', { timeout: 120_000 }, async () => {
    const logged = recordingLogger('warn', 200);
    const first = await inProcessDaemon({ prefix: 'fg1:', databaseUrl: db.url, env, log: logged.log });
    const t = await amyWinsAfterTheSave(first.call, first.define, 'held1');
    await first.daemon.stop();
    await server.kill();
    await server.start();
    // A daemon that never saw the item before: no rollback to see, only a held item with people waiting.
    const second = await inProcessDaemon({ prefix: 'fg1:', databaseUrl: db.url, env, log: logged.log });
    await checkAfterRollback(second.call, 'held1', t, logged.lines);
  });

  it('so does the daemon that ran through it, and the line behind her moves up', { timeout: 120_000 }, async () => {
    const logged = recordingLogger('warn', 200);
    const { call, define } = await inProcessDaemon({ prefix: 'fg2:', databaseUrl: db.url, env, log: logged.log });
    const t = await amyWinsAfterTheSave(call, define, 'held2');
    await server.kill();
    await server.start();
    // Out of the line (before: two waiting, amy ahead of bob in Redis, though her poll read the ledger's end).
    const item = await waitFor(() => call('GET', '/v1/items/held2').then((r) => r.body as { counts?: { waiting: number } }), (b) => b.counts?.waiting === 1, 30_000);
    expect(item.counts?.waiting, logged.lines()).toBe(1);
    expect((await waitFor(() => call('GET', `/v1/tickets/${t.bob}`, undefined, null).then((r) => r.body as View), (v) => v.position === 1)).position).toBe(1);
    await checkAfterRollback(call, 'held2', t, logged.lines);
  });

  it('a winner who had released her order stays succeeded with it, as after a cut; the one who bought the unit next keeps his', { timeout: 120_000 }, async () => {
    const logged = recordingLogger('warn', 200);
    const first = await inProcessDaemon({ prefix: 'fg3:', databaseUrl: db.url, env, log: logged.log });
    let call = first.call;
    const poll = (id: string) => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body as View);
    const t = await amyWinsAfterTheSave(call, first.define, 'held3');
    // Told succeeded, amy releases her order; its unit goes to bob (reserved).
    expect((await call('POST', `/v1/orders/${t.amyOrder}/release`, undefined, SVC)).status).toBe(200);
    const bobWon = await waitFor(() => poll(t.bob), (v) => v.state === 'succeeded');
    const bobOrder = bobWon.outcome!.result!.orderId!;
    await waitFor(() => db.sql`select status from ticket_outcomes where ticket_id = ${ticketRef(t.bob)}`.then((r) => r[0]?.status ?? null), (s) => s === 'succeeded');
    await first.daemon.stop();
    await server.kill();
    await server.start();
    // (A daemon that never saw them end: it answers from what the line and Postgres say.)
    call = (await inProcessDaemon({ prefix: 'fg3:', databaseUrl: db.url, env, log: logged.log })).call;
    // Both are back in the line; both bought since the save. Before: amy's ticket, run again, found
    // her order released and ended `rejected` / `reservation_released`, where a cut keeps the
    // `succeeded` she was told (the contract: a released order leaves its ticket succeeded).
    const amy = await watch(poll, t.amy, (v) => v.state === 'succeeded' || v.state === 'rejected');
    expect(amy.v, `amy read ${amy.seen.join(' ')}; ${logged.lines()}`).toMatchObject({ state: 'succeeded', outcome: { result: { orderId: t.amyOrder } } });
    const bob = await watch(poll, t.bob, (v) => v.state === 'succeeded' || v.state === 'rejected');
    expect(bob.v, `bob read ${bob.seen.join(' ')}`).toMatchObject({ state: 'succeeded', outcome: { result: { orderId: bobOrder } } });
    const orders = await db.sql`select user_id, status from orders where item_id = 'held3' order by user_id`;
    expect(orders.map((o) => [o.user_id, o.status])).toEqual([
      ['amy', 'released'],
      ['bob', 'reserved'],
      ['zed', 'released'],
    ]);
    expect((await db.sql`select total, sold, reserved from item_stock where item_id = 'held3'`)[0]).toEqual({ total: 1, sold: 1, reserved: 1 });
  });
});
