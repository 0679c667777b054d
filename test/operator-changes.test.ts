import { describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { joinAll, userIds } from './support/joins.js';
import { testRedis } from './support/redis.js';
import { itemKeys } from '../src/redis/keys.js';

/**
 * An operator changes a live item (PUT again, DELETE, PATCH): what its users are told stays true,
 * every ticket ends once or keeps waiting, and Postgres never sells past the stock asked for.
 */
const { redis, newPrefix } = testRedis();
const db = await testDb();
const prefix = newPrefix();
const { call } = await inProcessDaemon({ prefix, databaseUrl: db.url, env: { FLOODGATE_DOUBT_GRACE_MS: '500' } });
const ticket = (id: string) => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body);
const views = (ids: string[]) => Promise.all(ids.map(ticket));
const joinUsers = async (itemId: string, users: string[]) => (await joinAll((userId) => call('POST', `/v1/items/${itemId}/tickets`, { userId }, SVC), users)).map((r) => r.body.ticketId as string);

describe('an operator changing a live item', () => {
  it('opensAt moved into the future: the waiting tickets are not admitted (nor sold) before it, and are once it comes', { timeout: 60_000 }, async () => {
    await call('PUT', '/v1/items/later', { handler: 'seckill', config: { stock: 10 }, gate: { mode: 'closed' } });
    const ids = await joinUsers('later', ['a', 'b', 'c']);
    const opensAt = Date.now() + 3000;
    const put = await call('PUT', '/v1/items/later', { handler: 'seckill', config: { stock: 10 }, opensAt: new Date(opensAt).toISOString(), gate: { mode: 'auto' } });
    expect(put.body.state).toBe('scheduled');
    expect((await call('POST', '/v1/items/later/tickets', { userId: 'late' }, SVC)).status).toBe(425);
    // Until just before opensAt, every read says waiting and Postgres holds no order.
    await waitFor(
      async () => {
        const [vs, orders] = await Promise.all([views(ids), db.sql`select count(*)::int as n from orders where item_id = 'later'`]);
        expect(vs.map((v) => v.state)).toEqual(['waiting', 'waiting', 'waiting']);
        expect(orders[0].n).toBe(0);
        return Date.now();
      },
      (t) => t >= opensAt - 300,
      10_000,
    );
    const after = await waitFor(() => views(ids), (vs) => vs.every((v) => v.state === 'succeeded'), 20_000);
    expect(after.map((v) => v.state)).toEqual(['succeeded', 'succeeded', 'succeeded']);
  });
  it('stock lowered below what is reserved: units released afterwards are not sold again past the new stock', { timeout: 60_000 }, async () => {
    await call('PUT', '/v1/items/lower', { handler: 'seckill', config: { stock: 3, reserveMs: 600_000 }, gate: { mode: 'closed' } });
    const first = await joinUsers('lower', ['a', 'b', 'c']);
    await call('PATCH', '/v1/items/lower/gate', { mode: 'auto' });
    const sold = await waitFor(() => views(first), (vs) => vs.every((v) => v.state === 'succeeded'));
    expect(sold.map((v) => v.state)).toEqual(['succeeded', 'succeeded', 'succeeded']);
    expect((await call('PUT', '/v1/items/lower', { handler: 'seckill', config: { stock: 1, reserveMs: 600_000 } })).status).toBe(200);
    const more = await joinUsers('lower', ['d', 'e']);
    for (const v of sold.slice(0, 2)) expect((await call('POST', `/v1/orders/${v.outcome.result.orderId}/release`, {}, SVC)).status).toBe(200);
    // One reservation still holds the one unit asked for: d and e wait for it (awaiting returns).
    const [stock] = await db.sql`select total, sold, reserved from item_stock where item_id = 'lower'`;
    expect([stock.total, stock.sold, stock.reserved]).toEqual([1, 1, 1]);
    // Released, the one unit goes to one of them (a reservation again); the other waits for returns.
    expect((await call('POST', `/v1/orders/${sold[2].outcome.result.orderId}/release`, {}, SVC)).status).toBe(200);
    const end = await waitFor(() => views(more), (vs) => vs.some((v) => v.state === 'succeeded') && vs.some((v) => v.reason === 'awaiting_returns'), 20_000);
    expect(end.map((v) => v.state).sort()).toEqual(['succeeded', 'waiting']);
    const [live] = await db.sql`select count(*)::int as n from orders where item_id = 'lower' and status <> 'released'`;
    expect(live.n).toBe(1);
  });
  it('a sold-out seckill item redefined as external takes joins again, and one with units left admits every ticket', { timeout: 60_000 }, async () => {
    await call('PUT', '/v1/items/swap', { handler: 'seckill', config: { stock: 1 } });
    const [a] = await joinUsers('swap', ['a']);
    await waitFor(() => ticket(a), (v) => v.state === 'succeeded');
    await waitFor(() => call('GET', '/v1/items/swap').then((r) => r.body), (v) => v.state === 'sold_out');
    const put = await call('PUT', '/v1/items/swap', { handler: 'external' });
    expect([put.status, put.body.state, put.body.remaining]).toEqual([200, 'open', null]);
    expect((await call('POST', '/v1/items/swap/tickets', { userId: 'b' }, SVC)).status).toBe(202);

    await call('PUT', '/v1/items/left', { handler: 'seckill', config: { stock: 2 }, gate: { mode: 'closed' } });
    expect((await call('PUT', '/v1/items/left', { handler: 'external', gate: { mode: 'auto' } })).status).toBe(200);
    const ids = await joinUsers('left', ['a', 'b', 'c', 'd']);
    const pulled = new Set<string>();
    await waitFor(
      async () => {
        for (const t of (await call('POST', '/v1/items/left/pull', { max: 10 }, SVC)).body.tickets) {
          expect((await call('POST', `/v1/tickets/${t.ticketId}/outcome`, { leaseId: t.leaseId, status: 'succeeded' }, SVC)).status).toBe(200);
          pulled.add(t.ticketId);
        }
        return pulled.size;
      },
      (n) => n === ids.length,
      10_000,
    );
    expect(pulled.size).toBe(ids.length);
  });
  it('a replacement that names no gate keeps the gate as it is: raising the stock of a paused sale does not open it', async () => {
    await call('PUT', '/v1/items/paused', { handler: 'seckill', config: { stock: 1 }, gate: { mode: 'closed' } });
    const [a] = await joinUsers('paused', ['a']);
    const put = await call('PUT', '/v1/items/paused', { handler: 'seckill', config: { stock: 5 } });
    expect([put.status, put.body.gate.mode, put.body.remaining]).toEqual([200, 'closed', 5]);
    expect((await ticket(a)).state).toBe('waiting');
    expect((await call('PUT', '/v1/items/paused', { handler: 'seckill', config: { stock: 5 }, gate: { mode: 'auto' } })).body.gate.mode).toBe('auto');
    await waitFor(() => ticket(a), (v) => v.state === 'succeeded');
  });
  it('a sold-out split item redefined as external takes joins on every sub-line', async () => {
    await call('PUT', '/v1/items/split-swap', { handler: 'seckill', config: { stock: 0 }, lines: 4 });
    await waitFor(() => call('GET', '/v1/items/split-swap').then((r) => r.body), (v) => v.state === 'sold_out');
    expect((await call('PUT', '/v1/items/split-swap', { handler: 'external', lines: 4 })).body.state).toBe('open');
    const answers = await Promise.all(userIds(0, 16).map((userId) => call('POST', '/v1/items/split-swap/tickets', { userId }, SVC).then((r) => r.status)));
    expect(answers).toEqual(answers.map(() => 202));
  });

  it("a handler change drops the adaptive gate's estimate of the old downstream: a webhook item's limit does not cap it as seckill", async () => {
    await call('PUT', '/v1/items/swap-gate', { handler: 'webhook', config: { url: 'http://127.0.0.1:2/hook' }, gate: { mode: 'auto' } });
    // What the controller published for the webhook's downstream (a slow one: 4 in flight).
    const gate = itemKeys(prefix, 'swap-gate').gate;
    await redis.hset(gate, 'aLimit', '4', 'aRate', '2.000', 'aState', '{}');
    const put = await call('PUT', '/v1/items/swap-gate', { handler: 'seckill', config: { stock: 100 }, gate: { mode: 'auto' } });
    expect(put.status).toBe(200);
    // (Before: admissions stayed capped at 4 in flight and 2/s, for good: the controller never drives a seckill item.)
    expect(await redis.hmget(gate, 'aLimit', 'aRate', 'aState')).toEqual([null, null, null]);
    expect((await call('GET', '/v1/items/swap-gate')).body.gate.effective).not.toMatchObject({ maxInFlight: 4 });
  });
});
