import { describe, expect, it } from 'vitest';
import { writeSales } from '../src/db/sales.js';
import { inProcessDaemon, waitFor } from './support/daemon-inproc.js';
import { SERVICE, testApp } from './support/app.js';

/**
 * A ticket held in doubt (admitted, its lease run out, when its item sold out) ended with the
 * sell-out's outcome once Postgres showed no sale of its — even after an operator restocked the
 * item: the first user in line was told `sold_out` with units on sale, and later joiners bought
 * them. The sell-out no longer stands, so such a ticket runs again and buys.
 */
const t = await testApp();

describe('a ticket in doubt on an item restocked since its sell-out', () => {
  it.each([false, true])('runs again and buys, instead of being told sold_out (restocked paused: %s)', { timeout: 60_000 }, async (paused) => {
    const a = t.build();
    const item = t.uniqueItem();
    expect((await a.call('PUT', `/v1/items/${item}`, { handler: 'seckill', config: { stock: 1 }, gate: { mode: 'manual' } })).status).toBe(201);
    const alice = (await a.call('POST', `/v1/items/${item}/tickets`, { userId: 'alice' }, SERVICE)).body.ticketId as string;
    const bob = (await a.call('POST', `/v1/items/${item}/tickets`, { userId: 'bob' }, SERVICE)).body.ticketId as string;
    // A daemon admits alice (her unit taken) and dies; her lease runs out.
    const [admitted] = await a.queue.admissions.admit(item, 1, 3_600_000);
    expect(admitted.userId).toBe('alice');
    expect(await a.queue.admissions.extendLeases(item, [{ seq: admitted.seq, leaseId: admitted.leaseId }], Date.now() - 1)).toEqual([1]);
    // Another daemon's sale takes Postgres's last unit, and cuts the item sold out: bob is told so,
    // alice waits in doubt (her sale may have committed).
    expect((await writeSales(t.db.sql, 'orders', [{ itemId: item, userId: 'dave', ticketRef: `dave-${item}` }]))[0].kind).toBe('sold');
    expect(await a.queue.definitions.cut(item, 'sold_out')).toBe(1);
    expect((await a.call('GET', `/v1/tickets/${alice}`, undefined, null)).body.state).toBe('admitted');
    // The operator restocks.
    const put = await a.call('PUT', `/v1/items/${item}`, { handler: 'seckill', config: { stock: 3 }, gate: { mode: paused ? 'closed' : 'manual' } });
    // Postgres's 3 − 1 sold, less the one alice holds (set-stock-4.lua: it was counted twice, 2).
    expect([put.status, put.body.state, put.body.remaining]).toEqual([200, paused ? 'paused' : 'open', 1]);

    // A daemon takes her up.
    const { call } = await inProcessDaemon({ prefix: a.prefix, databaseUrl: t.db.url, env: { FLOODGATE_DOUBT_GRACE_MS: '200' } });
    if (paused) {
      // Not while the operator holds the gate closed: she would be sold past the pause. Three of
      // the resolver's rounds (one a second) go by with her in doubt, then the gate opens.
      await new Promise((r) => setTimeout(r, 3000));
      expect((await call('GET', `/v1/tickets/${alice}`, undefined, null)).body.state).toBe('admitted');
      expect(await t.db.sql`select 1 from orders where item_id = ${item} and user_id = 'alice'`).toHaveLength(0);
      expect((await call('PATCH', `/v1/items/${item}/gate`, { mode: 'manual' })).status).toBe(200);
    }
    const v = await waitFor(
      () => call('GET', `/v1/tickets/${alice}`, undefined, null).then((r) => r.body),
      (b) => !['waiting', 'admitted'].includes(b.state),
      30_000,
    );
    const [order] = await t.db.sql`select order_id::text as id from orders where item_id = ${item} and user_id = 'alice'`;
    expect(order).toBeDefined(); // before: none, and alice read rejected / sold_out
    expect(v).toMatchObject({ state: 'succeeded', outcome: { result: { orderId: order.id } } });
    expect((await call('GET', `/v1/tickets/${bob}`, undefined, null)).body).toMatchObject({ state: 'rejected', outcome: { reason: 'sold_out' } });
  });
});
