import { describe, expect, it } from 'vitest';
import { writeSales } from '../src/db/sales.js';
import { ticketRef } from '../src/kernel/ticket-ref.js';
import { createLogger } from '../src/kernel/logger.js';
import { itemKeys } from '../src/redis/keys.js';
import { createReservations } from '../src/service/reservations.js';
import { SERVICE, testApp } from './support/app.js';

/** Reservations (seckill with reserveMs) and invites at their edges: who may settle an order or invite, and what a released buyer may do. */
const t = await testApp();

/**
 * A seckill item (stock 1, reservations) whose one order the shop released: Postgres's half done,
 * the Redis half not yet (its daemon died, or Redis blipped: the next sweep of any daemon finishes it).
 */
async function releasedHalfway() {
  const { call, queue, stock, prefix } = t.build();
  const reservations = createReservations({ sql: t.db.sql, queue, stock, log: createLogger('silent'), onReturned: () => {} });
  const item = t.uniqueItem();
  expect((await call('PUT', `/v1/items/${item}`, { handler: 'seckill', config: { stock: 1, reserveMs: 600_000 } })).status).toBe(201);
  const j = await call('POST', `/v1/items/${item}/tickets`, { userId: 'u1' }, SERVICE);
  const [adm] = await queue.admissions.admit(item, 1, 60_000);
  const [sale] = await writeSales(t.db.sql, 'orders', [{ itemId: item, userId: 'u1', ticketRef: ticketRef(j.body.ticketId), reserveMs: 600_000 }]);
  const orderId = (sale as { id: string }).id;
  await queue.admissions.settle(j.body.ticketId, { leaseId: adm.leaseId, status: 'succeeded', result: { orderId } });
  await t.db.sql`select * from floodgate_settle_order(${orderId}::bigint, 'released')`;
  return { call, prefix, reservations, item, orderId };
}

describe('reservations at their edges', () => {
  it("a key scoped to other items can neither release nor confirm an item's orders (403, nothing changes)", async () => {
    const { call, queue } = t.build({ scopes: 'app:app-*,shop:shop-*' });
    const item = `shop-${t.uniqueItem()}`;
    expect((await call('PUT', `/v1/items/${item}`, { handler: 'seckill', config: { stock: 1, reserveMs: 600_000 } })).status).toBe(201);
    const j = await call('POST', `/v1/items/${item}/tickets`, { userId: 'u1' }, 'shop-key');
    expect(j.status).toBe(202);
    expect((await call('POST', `/v1/items/${item}/tickets`, { userId: 'u9' }, 'app-key')).status).toBe(403);
    const [adm] = await queue.admissions.admit(item, 1, 60_000);
    const [sale] = await writeSales(t.db.sql, 'orders', [{ itemId: item, userId: 'u1', ticketRef: ticketRef(j.body.ticketId), reserveMs: 600_000 }]);
    const orderId = (sale as { id: string }).id;
    await queue.admissions.settle(j.body.ticketId, { leaseId: adm.leaseId, status: 'succeeded', result: { orderId } });
    for (const action of ['release', 'confirm']) {
      const r = await call('POST', `/v1/orders/${orderId}/${action}`, undefined, 'app-key');
      expect([r.status, r.body.error?.code]).toEqual([403, 'forbidden']);
    }
    const [o] = await t.db.sql`select status from orders where order_id = ${orderId}`;
    expect(o.status).toBe('reserved');
    expect((await call('POST', `/v1/orders/${orderId}/confirm`, undefined, 'shop-key')).status).toBe(200);
    expect((await call('POST', `/v1/orders/${orderId}/release`, undefined, SERVICE)).status).toBe(409);
  });
  it('an item with reservations pending keeps its handler (409): under coupon their release gave units to the coupons, and the recount answered 500', async () => {
    const { call, queue } = t.build();
    const item = t.uniqueItem();
    expect((await call('PUT', `/v1/items/${item}`, { handler: 'seckill', config: { stock: 2, reserveMs: 600_000 } })).status).toBe(201);
    const j = await call('POST', `/v1/items/${item}/tickets`, { userId: 'u1' }, SERVICE);
    const [adm] = await queue.admissions.admit(item, 1, 60_000);
    const [sale] = await writeSales(t.db.sql, 'orders', [{ itemId: item, userId: 'u1', ticketRef: ticketRef(j.body.ticketId), reserveMs: 600_000 }]);
    const orderId = (sale as { id: string }).id;
    await queue.admissions.settle(j.body.ticketId, { leaseId: adm.leaseId, status: 'succeeded', result: { orderId } });
    const change = await call('PUT', `/v1/items/${item}`, { handler: 'coupon', config: { total: 2 } });
    expect([change.status, change.body.error?.code]).toEqual([409, 'conflict']);
    expect((await call('GET', `/v1/items/${item}`)).body.handler).toBe('seckill');
    // Once confirmed, it may change.
    expect((await call('POST', `/v1/orders/${orderId}/confirm`, undefined, SERVICE)).status).toBe(200);
    expect((await call('PUT', `/v1/items/${item}`, { handler: 'coupon', config: { total: 2 } })).status).toBe(200);
  });

  it('an order released while its ticket still ran: the ticket ends rejected/reservation_released, not succeeded with the released order, and its buyer may join again', async () => {
    const { call, queue, prefix } = t.build();
    const item = t.uniqueItem();
    expect((await call('PUT', `/v1/items/${item}`, { handler: 'seckill', config: { stock: 1, reserveMs: 600_000 } })).status).toBe(201);
    const j1 = await call('POST', `/v1/items/${item}/tickets`, { userId: 'u1' }, SERVICE);
    expect(j1.status).toBe(202);
    const [adm] = await queue.admissions.admit(item, 1, 60_000);
    // What u1's job does: the sale commits in Postgres while the ticket is still admitted in Redis…
    const [sale] = await writeSales(t.db.sql, 'orders', [{ itemId: item, userId: 'u1', ticketRef: ticketRef(j1.body.ticketId), reserveMs: 600_000 }]);
    const orderId = (sale as { id: string }).id;
    // …the order is released before the job's settle reaches Redis…
    expect((await call('POST', `/v1/orders/${orderId}/release`, undefined, SERVICE)).status).toBe(200);
    // …and the job settles the ticket with its sale.
    await queue.admissions.settle(j1.body.ticketId, { leaseId: adm.leaseId, status: 'succeeded', result: { orderId } });
    const told = (await call('GET', `/v1/tickets/${j1.body.ticketId}`, undefined, null)).body;
    expect(told).toMatchObject({ state: 'rejected', outcome: { status: 'rejected', reason: 'reservation_released' } });
    // The unit went back once, with the release (not a second time with the ticket's end).
    expect((await call('GET', `/v1/items/${item}`)).body.remaining).toBe(1);
    // A mark naming another order (the release marks the user's latest ticket) leaves a sale alone.
    const j2 = await call('POST', `/v1/items/${item}/tickets`, { userId: 'u2' }, SERVICE);
    const [adm2] = await queue.admissions.admit(item, 1, 60_000);
    expect(adm2.ticketId).toBe(j2.body.ticketId);
    await t.redis.hset(itemKeys(prefix, item).x(adm2.seq), 'orderReleased', '999999');
    await queue.admissions.settle(j2.body.ticketId, { leaseId: adm2.leaseId, status: 'succeeded', result: { orderId: '424242' } });
    expect((await call('GET', `/v1/tickets/${j2.body.ticketId}`, undefined, null)).body).toMatchObject({ state: 'succeeded', outcome: { result: { orderId: '424242' } } });
    // Its own state leaves Redis after FLOODGATE_TICKET_STATE_TTL_MS: the user's place stays free.
    await t.redis.del(itemKeys(prefix, item).x(adm.seq));
    const again = await call('POST', `/v1/items/${item}/tickets`, { userId: 'u1' }, SERVICE);
    expect(again.status).toBe(202);
    expect(again.body.ticketId).not.toBe(j1.body.ticketId);
  });
  it('a ticket in doubt whose order is released ends reservation_released and its unit goes back once', async () => {
    const { call, queue, stock, prefix } = t.build();
    const reservations = createReservations({ sql: t.db.sql, queue, stock, log: createLogger('silent'), onReturned: () => {} });
    const item = t.uniqueItem();
    expect((await call('PUT', `/v1/items/${item}`, { handler: 'seckill', config: { stock: 2, reserveMs: 600_000 } })).status).toBe(201);
    const j = await call('POST', `/v1/items/${item}/tickets`, { userId: 'u1' }, SERVICE);
    const [adm] = await queue.admissions.admit(item, 1, 50); // takes its unit: 1 left in Redis
    const [sale] = await writeSales(t.db.sql, 'orders', [{ itemId: item, userId: 'u1', ticketRef: ticketRef(j.body.ticketId), reserveMs: 600_000 }]);
    // Its daemon died before the settle; the item closed; its lease ran out: in doubt, unit held.
    expect((await call('DELETE', `/v1/items/${item}`)).status).toBe(200);
    await new Promise((r) => setTimeout(r, 100));
    await queue.admissions.sweep();
    // The shop releases the order: its unit goes back to Redis (2 left).
    await reservations.release((sale as { id: string }).id);
    await queue.admissions.resolveDoubts(item, [{ seq: adm.seq, result: null, outcome: { status: 'rejected', reason: 'reservation_released' } }]);
    expect((await call('GET', `/v1/tickets/${j.body.ticketId}`, undefined, null)).body).toMatchObject({ state: 'rejected', outcome: { reason: 'reservation_released' } });
    const counter = await t.redis.hvals(itemKeys(prefix, item).stock);
    expect(counter.reduce((n, v) => n + Number(v), 0)).toBe(2); // was 3: given back by the release and by the ticket's end
  });

  it('a key scoped to other items may not issue invites for an item (403, as for joins), known or not', async () => {
    const { call } = t.build({ scopes: 'app:app-*,shop:shop-*' });
    const item = `shop-${t.uniqueItem()}`;
    expect((await call('PUT', `/v1/items/${item}`, { handler: 'external' })).status).toBe(201);
    const inv = await call('POST', `/v1/items/${item}/invites`, { userId: 'u1' }, 'app-key');
    expect([inv.status, inv.body.error?.code]).toEqual([403, 'forbidden']);
    expect((await call('POST', `/v1/items/shop-unknown/invites`, { userId: 'u1' }, 'app-key')).status).toBe(403);
    expect((await call('POST', `/v1/items/${item}/invites`, { userId: 'u1' }, 'shop-key')).status).toBe(201);
  });

  it('a released unit on its way back keeps the handler (409); once back, an external item under the new handler admits every ticket', async () => {
    const { call, prefix, reservations, item, orderId } = await releasedHalfway();
    const change = await call('PUT', `/v1/items/${item}`, { handler: 'external' });
    expect([change.status, change.body.error?.code]).toEqual([409, 'conflict']);
    await reservations.sweep();
    expect((await call('PUT', `/v1/items/${item}`, { handler: 'external' })).status).toBe(200);
    const ids: string[] = [];
    for (const u of ['a', 'b', 'c']) ids.push((await call('POST', `/v1/items/${item}/tickets`, { userId: u }, SERVICE)).body.ticketId);
    const pulled = await call('POST', `/v1/items/${item}/pull`, { max: 10 }, SERVICE);
    expect(pulled.body.tickets.map((x: { ticketId: string }) => x.ticketId)).toEqual(ids);
    expect(await t.redis.exists(itemKeys(prefix, item).stock)).toBe(0);
  });

  it("a released unit's return makes no stock counter where the item has none (it counted as stock on an item that keeps none)", async () => {
    const { call, prefix, reservations, item, orderId } = await releasedHalfway();
    // The item's counter gone (a handler that keeps none, or a Redis loss before the restore counts it).
    await t.redis.del(itemKeys(prefix, item).stock);
    await reservations.sweep();
    expect(await t.redis.exists(itemKeys(prefix, item).stock)).toBe(0);
    const [o] = await t.db.sql`select returned_at from orders where order_id = ${orderId}`;
    expect(o.returned_at).not.toBeNull();
  });
});
