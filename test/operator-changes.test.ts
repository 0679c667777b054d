import { describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { joinAll, userIds } from './support/joins.js';
import { testRedis } from './support/redis.js';

/**
 * An operator changes a live item (PUT again, DELETE, PATCH): what its users are told stays true,
 * every ticket ends once or keeps waiting, and Postgres never sells past the stock asked for.
 */
const { newPrefix } = testRedis();
const db = await testDb();
const { call } = await inProcessDaemon({ prefix: newPrefix(), databaseUrl: db.url, env: { FLOODGATE_DOUBT_GRACE_MS: '500' } });
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
});
