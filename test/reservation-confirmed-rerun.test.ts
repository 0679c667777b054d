import { describe, expect, it, vi } from 'vitest';
import { ownSale, unitsLeft, writeSales } from '../src/db/sales.js';
import { createLogger } from '../src/kernel/logger.js';
import { itemKeys } from '../src/redis/keys.js';
import { createReservations } from '../src/service/reservations.js';
import { ticketRef } from '../src/kernel/ticket-ref.js';
import { seckill } from '../src/service/handlers/seckill.js';
import { inProcessDaemon, waitFor } from './support/daemon-inproc.js';
import { SERVICE, testApp } from './support/app.js';
import { handlerContext } from './support/handler-context.js';

/**
 * A ticket whose reserved order the shop confirmed (paid), run again after its `reservedUntil`
 * (its settle lost to a Redis rollback, or its daemon killed before it): a confirmed order is never
 * released, yet the run took the lapsed `reservedUntil` for a release on its way and went back to
 * the head to wait for it, every run, for good — and a ticket in doubt stayed `admitted` for good
 * (its item's count of admitted tickets kept retention away). The paid order is the user's answer.
 */
const t = await testApp();
const config = { stock: 2, reserveMs: 600_000 };

describe('a ticket whose reserved order was confirmed, run again after its reservedUntil', () => {
  it('answers the confirmed order, on a run that finds no unit and on one that sells again', async () => {
    const a = t.build();
    const item = t.uniqueItem();
    expect((await a.call('PUT', `/v1/items/${item}`, { handler: 'seckill', config, gate: { mode: 'manual' } })).status).toBe(201);
    const alice = (await a.call('POST', `/v1/items/${item}/tickets`, { userId: 'alice' }, SERVICE)).body.ticketId as string;
    const [first] = await a.queue.admissions.admit(item, 1, 60_000);
    // Her first run sold (committed) and never settled; the shop confirmed the order, paid.
    const [sale] = await writeSales(t.db.sql, 'orders', [{ itemId: item, userId: 'alice', ticketRef: ticketRef(alice), reserveMs: config.reserveMs }]);
    expect(sale.kind).toBe('sold');
    const orderId = (sale as { id: string }).id;
    expect((await a.call('POST', `/v1/orders/${orderId}/confirm`, undefined, SERVICE)).body).toMatchObject({ status: 'confirmed' });
    await t.db.sql`update orders set reserved_until = now() - interval '1 second' where order_id = ${orderId}`;

    const ctx = handlerContext(a, t.db.sql, item);
    const run = (attempt: number) => seckill.handle!({ ticketId: alice, itemId: item, seq: first.seq, userId: 'alice', payload: null, config, attempt }, ctx);
    // A run that takes a unit and asks Postgres again: the replay of her confirmed order.
    await expect(run(2)).resolves.toMatchObject({ status: 'succeeded', result: { orderId } }); // before: RequeueError awaiting_release
    // A run that finds no unit (its unit is held by the ticket already) and asks for her own row.
    await expect(run(3)).resolves.toMatchObject({ status: 'succeeded', result: { orderId } });
    expect(await ownSale(t.db.sql, 'orders', item, ticketRef(alice), 'alice')).toMatchObject({ id: orderId, confirmed: true });
  });

  it("answers a live reservation on a machine whose clock runs ahead of Postgres's", async () => {
    const a = t.build();
    const item = t.uniqueItem();
    expect((await a.call('PUT', `/v1/items/${item}`, { handler: 'seckill', config, gate: { mode: 'manual' } })).status).toBe(201);
    const bob = (await a.call('POST', `/v1/items/${item}/tickets`, { userId: 'bob' }, SERVICE)).body.ticketId as string;
    const [first] = await a.queue.admissions.admit(item, 1, 60_000);
    const [sale] = await writeSales(t.db.sql, 'orders', [{ itemId: item, userId: 'bob', ticketRef: ticketRef(bob), reserveMs: 60_000 }]);
    const orderId = (sale as { id: string }).id;
    const ctx = handlerContext(a, t.db.sql, item);
    // This machine's clock is two minutes ahead: by it the reservation ran out; by Postgres's, whose
    // sweep releases it, it runs a minute more. (Before: sent back to the head until it was released.)
    vi.setSystemTime(Date.now() + 120_000);
    try {
      const out = await seckill.handle!({ ticketId: bob, itemId: item, seq: first.seq, userId: 'bob', payload: null, config, attempt: 2 }, ctx);
      expect(out).toMatchObject({ status: 'succeeded', result: { orderId } });
    } finally {
      vi.useRealTimers();
    }
  });

  it('ends a ticket in doubt with its confirmed order', { timeout: 60_000 }, async () => {
    const a = t.build();
    const item = t.uniqueItem();
    expect((await a.call('PUT', `/v1/items/${item}`, { handler: 'seckill', config: { ...config, stock: 1 }, gate: { mode: 'manual' } })).status).toBe(201);
    const alice = (await a.call('POST', `/v1/items/${item}/tickets`, { userId: 'alice' }, SERVICE)).body.ticketId as string;
    const bob = (await a.call('POST', `/v1/items/${item}/tickets`, { userId: 'bob' }, SERVICE)).body.ticketId as string;
    // A daemon admits alice, sells, dies before the settle; her lease runs out.
    const [admitted] = await a.queue.admissions.admit(item, 1, 3_600_000);
    expect(admitted.userId).toBe('alice');
    const [sale] = await writeSales(t.db.sql, 'orders', [{ itemId: item, userId: 'alice', ticketRef: ticketRef(alice), reserveMs: config.reserveMs }]);
    const orderId = (sale as { id: string }).id;
    expect(await a.queue.admissions.extendLeases(item, [{ seq: admitted.seq, leaseId: admitted.leaseId }], Date.now() - 1)).toEqual([1]);
    // The shop confirms: the item is sold out (bob told so, by the confirm), alice waits in doubt;
    // her reservation's time passes.
    expect((await a.call('POST', `/v1/orders/${orderId}/confirm`, undefined, SERVICE)).body).toMatchObject({ status: 'confirmed' });
    await a.queue.definitions.cut(item, 'sold_out');
    expect((await a.call('GET', `/v1/tickets/${bob}`, undefined, null)).body).toMatchObject({ state: 'rejected', outcome: { reason: 'sold_out' } });
    await t.db.sql`update orders set reserved_until = now() - interval '1 second' where order_id = ${orderId}`;
    expect((await a.call('GET', `/v1/tickets/${alice}`, undefined, null)).body.state).toBe('admitted');

    const { call } = await inProcessDaemon({ prefix: a.prefix, databaseUrl: t.db.url, env: { FLOODGATE_DOUBT_GRACE_MS: '200' } });
    const v = await waitFor(
      () => call('GET', `/v1/tickets/${alice}`, undefined, null).then((r) => r.body),
      (b) => !['waiting', 'admitted'].includes(b.state),
      30_000,
    );
    expect(v).toMatchObject({ state: 'succeeded', outcome: { result: { orderId } } }); // before: admitted for good
    expect((await call('GET', `/v1/tickets/${bob}`, undefined, null)).body).toMatchObject({ state: 'rejected', outcome: { reason: 'sold_out' } });
  });
});

describe('a ticket run again after its reserved order was released', () => {
  it("ends reservation_released, and Redis's count of units ends at Postgres's: the unit its run took goes back only as far as Postgres has units", async () => {
    const a = t.build();
    const reservations = createReservations({ sql: t.db.sql, queue: a.queue, stock: a.stock, log: createLogger('silent'), onReturned: () => {} });
    const item = t.uniqueItem();
    const units = async () => (await t.redis.hvals(itemKeys(a.prefix, item).stock)).reduce((n, v) => n + Number(v), 0);
    expect((await a.call('PUT', `/v1/items/${item}`, { handler: 'seckill', config, gate: { mode: 'manual' } })).status).toBe(201);
    const alice = (await a.call('POST', `/v1/items/${item}/tickets`, { userId: 'alice' }, SERVICE)).body.ticketId as string;
    const [first] = await a.queue.admissions.admit(item, 1, 60_000);
    // Her run sold (committed) and its daemon died before the settle: the lease runs out.
    const [sale] = await writeSales(t.db.sql, 'orders', [{ itemId: item, userId: 'alice', ticketRef: ticketRef(alice), reserveMs: config.reserveMs }]);
    const orderId = (sale as { id: string }).id;
    await a.queue.admissions.extendLeases(item, [{ seq: first.seq, leaseId: first.leaseId }], Date.now() - 1);
    await a.queue.admissions.sweep();
    // Her reservation lapses and the sweep releases the order, its unit back in stock.
    await t.db.sql`update orders set reserved_until = now() - interval '1 second' where order_id = ${orderId}`;
    await reservations.sweep();
    const [second] = await a.queue.admissions.admit(item, 1, 60_000);
    expect(second.seq).toBe(first.seq);
    const out = await seckill.handle!({ ticketId: alice, itemId: item, seq: second.seq, userId: 'alice', payload: null, config, attempt: 2 }, handlerContext(a, t.db.sql, item));
    expect(out).toMatchObject({ status: 'rejected', reason: 'reservation_released' });
    await a.queue.admissions.settle(alice, { leaseId: second.leaseId, ...(out as { status: 'rejected'; reason: string }) });
    // Redis's count of units is Postgres's (before: one over, 3 on a stock of 2, until a recount).
    expect(await units()).toBe((await unitsLeft(t.db.sql, item))!.left);
    expect((await a.call('GET', `/v1/items/${item}`)).body.remaining).toBe(2);
  });

  it("ends reservation_released while another ticket holds a unit in flight, and Redis's count still ends at Postgres's", async () => {
    // The bound counted the counter alone: a unit another admitted ticket held was counted twice,
    // and the rerun's unit went back one over Postgres (3 on a stock that had 2 left; a review).
    const a = t.build();
    const reservations = createReservations({ sql: t.db.sql, queue: a.queue, stock: a.stock, log: createLogger('silent'), onReturned: () => {} });
    const item = t.uniqueItem();
    const cfg = { stock: 3, reserveMs: config.reserveMs };
    const units = async () => (await t.redis.hvals(itemKeys(a.prefix, item).stock)).reduce((n, v) => n + Number(v), 0);
    expect((await a.call('PUT', `/v1/items/${item}`, { handler: 'seckill', config: cfg, gate: { mode: 'manual' } })).status).toBe(201);
    const alice = (await a.call('POST', `/v1/items/${item}/tickets`, { userId: 'alice' }, SERVICE)).body.ticketId as string;
    const bob = (await a.call('POST', `/v1/items/${item}/tickets`, { userId: 'bob' }, SERVICE)).body.ticketId as string;
    const ctx = handlerContext(a, t.db.sql, item);
    const [first] = await a.queue.admissions.admit(item, 1, 60_000);
    // Her first run sold (committed); its daemon died before the settle, and her lease ran out.
    await a.stock.take(item, [first.seq]);
    const [sale] = await writeSales(t.db.sql, 'orders', [{ itemId: item, userId: 'alice', ticketRef: ticketRef(alice), reserveMs: cfg.reserveMs }]);
    const orderId = (sale as { id: string }).id;
    await a.queue.admissions.extendLeases(item, [{ seq: first.seq, leaseId: first.leaseId }], Date.now() - 1);
    await a.queue.admissions.sweep();
    // Alice again and Bob admitted; Bob's run holds its unit, his sale not made yet.
    const [second, b] = await a.queue.admissions.admit(item, 2, 60_000);
    expect([second.seq, b.userId]).toEqual([first.seq, 'bob']);
    await a.stock.take(item, [b.seq]);
    // Her reservation lapses and is released; her ticket runs again.
    await t.db.sql`update orders set reserved_until = now() - interval '1 second' where order_id = ${orderId}`;
    await reservations.sweep();
    const out = await seckill.handle!({ ticketId: alice, itemId: item, seq: second.seq, userId: 'alice', payload: null, config: cfg, attempt: 2 }, ctx);
    expect(out).toMatchObject({ status: 'rejected', reason: 'reservation_released' });
    await a.queue.admissions.settle(alice, { leaseId: second.leaseId, ...(out as { status: 'rejected'; reason: string }) });
    // Bob's sale commits and settles.
    const outB = await seckill.handle!({ ticketId: bob, itemId: item, seq: b.seq, userId: 'bob', payload: null, config: cfg, attempt: 1 }, ctx);
    expect(outB).toMatchObject({ status: 'succeeded' });
    await a.queue.admissions.settle(bob, { leaseId: b.leaseId, ...(outB as { status: 'succeeded' }) });
    expect(await units()).toBe((await unitsLeft(t.db.sql, item))!.left); // before: one over
  });
});
