import { describe, expect, it } from 'vitest';
import { writeSales } from '../src/db/sales.js';
import { ticketRef } from '../src/kernel/ticket-ref.js';
import { seckill } from '../src/service/handlers/seckill.js';
import { SERVICE, testApp } from './support/app.js';
import { handlerContext } from './support/handler-context.js';

/**
 * A ticket whose sale committed, but whose run never heard it (the Postgres connection dropped
 * after the commit), gives its unit back and is run again (its settle failed on a Redis blip, so
 * the job retried with the ticket still admitted); meanwhile another ticket takes that unit. The
 * run again finds no unit and Postgres's none left: it told the user `sold_out` while Postgres held
 * their order. It now answers the order the ticket's earlier run made.
 */
const t = await testApp();

describe('a run that finds no unit for a ticket whose sale committed', () => {
  it('answers its order, not sold_out', async () => {
    const a = t.build();
    const item = t.uniqueItem();
    expect((await a.call('PUT', `/v1/items/${item}`, { handler: 'seckill', config: { stock: 1 }, gate: { mode: 'manual' } })).status).toBe(201);
    const alice = (await a.call('POST', `/v1/items/${item}/tickets`, { userId: 'alice' }, SERVICE)).body.ticketId as string;
    expect((await a.call('POST', `/v1/items/${item}/tickets`, { userId: 'bob' }, SERVICE)).status).toBe(202);
    const [first] = await a.queue.admissions.admit(item, 1, 60_000);
    expect(first.userId).toBe('alice');
    // Her first run: takes the unit, sells (committed), loses the answer and gives the unit back.
    expect((await a.stock.take(item, [first.seq])).taken).toEqual([true]);
    const [sale] = await writeSales(t.db.sql, 'orders', [{ itemId: item, userId: 'alice', ticketRef: ticketRef(alice), reserveMs: 600_000 }]);
    expect(sale.kind).toBe('sold');
    await a.stock.refund(item, first.seq);
    // Bob is admitted with that unit.
    const [second] = await a.queue.admissions.admit(item, 1, 60_000);
    expect(second.userId).toBe('bob');

    // Her run again, with the daemon's parts: Redis's counter, Postgres's rows.
    const ctx = handlerContext(a, t.db.sql, item, () => Promise.reject(new Error('no unit was taken: nothing is sold')));
    const out = await seckill.handle!({ ticketId: alice, itemId: item, seq: first.seq, userId: 'alice', payload: null, config: { stock: 1, reserveMs: 600_000 }, attempt: 2 }, ctx);
    const [order] = await t.db.sql`select order_id::text as id from orders where item_id = ${item} and user_id = 'alice'`;
    expect(out).toMatchObject({ status: 'succeeded', result: { orderId: order.id, reservedUntil: expect.any(String) } }); // before: rejected, sold_out
    // Its reservation ran out and no sweep has released it yet: not `succeeded` with an order
    // released a moment later — back to the head, to wait for the release.
    await t.db.sql`update orders set reserved_until = now() - interval '1 second' where order_id = ${order.id}`;
    await expect(seckill.handle!({ ticketId: alice, itemId: item, seq: first.seq, userId: 'alice', payload: null, config: { stock: 1, reserveMs: 600_000 }, attempt: 3 }, ctx)).rejects.toMatchObject({ name: 'RequeueError', reason: 'awaiting_release' });
    // Had it been a reservation released since, no order is hers: as a replay answers it.
    await t.db.sql`update orders set status = 'released' where order_id = ${order.id}`;
    const again = await seckill.handle!({ ticketId: alice, itemId: item, seq: first.seq, userId: 'alice', payload: null, config: { stock: 1, reserveMs: 600_000 }, attempt: 3 }, ctx);
    expect(again).toEqual({ status: 'rejected', reason: 'reservation_released' });
  });
});
