import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { writeSales } from '../src/db/sales.js';
import { createLogger } from '../src/kernel/logger.js';
import { itemKeys } from '../src/redis/keys.js';
import { createReservations } from '../src/service/reservations.js';
import { ticketRef } from '../src/kernel/ticket-ref.js';
import { testApp } from './support/app.js';

const t = await testApp();

type Step = { op: 'join'; user: number } | { op: 'confirm' | 'release' | 'expire'; pick: number } | { op: 'sweep' };
const step: fc.Arbitrary<Step> = fc.oneof(
  fc.record({ op: fc.constant('join' as const), user: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ op: fc.constantFrom('confirm' as const, 'release' as const, 'expire' as const), pick: fc.nat(50) }),
  fc.record({ op: fc.constant('sweep' as const) }),
);

describe('reservations, as a property over interleavings', () => {
  it('conserves units at every step: confirmed + reserved + free = total in Postgres, and the Redis counter holds the free ones', async () => {
    let run = 0;
    // One wiring for every run: each run has an item of its own, and nothing here runs in the
    // background (no loops), so no run sees another's.
    const { call, queue, stock, prefix } = t.build();
    const resv = createReservations({ sql: t.db.sql, queue, stock, log: createLogger('silent'), onReturned: () => {} });
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 4 }), fc.array(step, { minLength: 5, maxLength: 30 }), async (total, steps) => {
        const item = `prop-${run++}-${t.uniqueItem()}`;
        expect((await call('PUT', `/v1/items/${item}`, { handler: 'seckill', config: { stock: total, reserveMs: 60_000 } })).status).toBe(201);
        const k = itemKeys(prefix, item);
        let seq = 0;
        const orderIds: string[] = [];
        const counter = async () => (await t.redis.hvals(k.stock)).reduce((a, v) => a + Number(v), 0);
        for (const s of steps) {
          if (s.op === 'join') {
            // The handler's path: a unit in Redis first, then Postgres; no sale gives it back.
            seq++;
            const took = await stock.take(item, [seq]);
            if (!took.taken[0]) continue;
            const [sale] = await writeSales(t.db.sql, 'orders', [{ itemId: item, userId: `u${s.user}`, ticketRef: ticketRef(`${item}.${seq}`), reserveMs: 60_000 }]);
            if (sale.kind === 'sold') orderIds.push(sale.id);
            else await stock.refund(item, seq);
          } else if (s.op === 'sweep') {
            await resv.sweep();
          } else if (orderIds.length) {
            const id = orderIds[s.pick % orderIds.length];
            if (s.op === 'expire') {
              await t.db.sql`update orders set reserved_until = now() - interval '1 second' where order_id = ${id} and status = 'reserved'`;
              await resv.sweep();
            } else {
              await (s.op === 'confirm' ? resv.confirm(id) : resv.release(id)).catch((err) => {
                expect(['conflict', 'reservation_expired']).toContain(err.code);
              });
            }
          }
          // Postgres's side in one statement (one snapshot), with Redis's counter read beside it.
          const [[st], free] = await Promise.all([
            t.db.sql`
              select s.total, s.sold, s.reserved,
                (select count(*) from orders where item_id = ${item} and status = 'confirmed')::int as confirmed,
                (select count(*) from orders where item_id = ${item} and status = 'reserved')::int as reserved_orders,
                (select count(*) from (select user_id from orders where item_id = ${item} and status <> 'released' group by user_id having count(*) > 1) d)::int as dup_users
              from item_stock s where s.item_id = ${item}`,
            counter(),
          ]);
          expect(st.confirmed + st.reserved_orders + (st.total - st.sold)).toBe(total);
          expect(st.reserved).toBe(st.reserved_orders);
          expect(st.confirmed).toBeLessThanOrEqual(total);
          expect(free).toBe(st.total - st.sold);
          expect(st.dup_users).toBe(0);
        }
      }),
      { numRuns: 25 },
    );
  }, 120_000);
});
