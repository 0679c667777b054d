import { describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { joinAll, retrying503, userIds } from './support/joins.js';
import { testRedis } from './support/redis.js';
import { expectSoldExactly } from './support/sale-checks.js';

/** A seckill item with lines: 8 through one daemon on one Redis; the field's contract. */
const { newPrefix } = testRedis();
const db = await testDb();
const { call: callOnce } = await inProcessDaemon({ prefix: newPrefix(), databaseUrl: db.url });
// A 503 (a busy machine's Redis past its budget) asked again, as a client does; other answers are the tests'.
const call = retrying503(callOnce);

describe('an item split into sub-lines, through the daemon', () => {
  it('takes lines 1–64, shows it, refuses a change and what it does not split yet', async () => {
    for (const lines of [0, 65, 2.5, '8', null]) {
      const r = await call('PUT', '/v1/items/bad-lines', { handler: 'external', lines });
      expect({ lines, status: r.status, code: r.body.error?.code }).toEqual({ lines, status: 400, code: 'invalid_request' });
    }
    expect((await call('PUT', '/v1/items/lines-1', { handler: 'external' })).body.lines).toBe(1);
    const put = await call('PUT', '/v1/items/lines-8', { handler: 'external', lines: 8 });
    expect(put.status).toBe(201);
    expect((await call('GET', '/v1/items/lines-8')).body.lines).toBe(8);
    expect((await call('PUT', '/v1/items/lines-8', { handler: 'external' })).body.lines).toBe(8);
    const change = await call('PUT', '/v1/items/lines-8', { handler: 'external', lines: 4 });
    expect({ status: change.status, code: change.body.error.code }).toEqual({ status: 409, code: 'conflict' });
    const unsplit = await call('PUT', '/v1/items/lines-cap', { handler: 'external', lines: 8, capacity: 10 });
    expect({ status: unsplit.status, code: unsplit.body.error.code }).toEqual({ status: 400, code: 'invalid_request' });
  });

  it('sells exactly the stock of a lines: 8 seckill item, once per user; the rest read sold_out; polls and cancels find their sub-line', async () => {
    const stock = 40;
    await call('PUT', '/v1/items/sk8', { handler: 'seckill', config: { stock }, lines: 8, gate: { mode: 'manual', maxInFlight: 16 } });
    const users = userIds(0, 200, 's');
    const answers = await joinAll((userId) => call('POST', '/v1/items/sk8/tickets', { userId }, SVC), [...users, ...users.slice(0, 50)], { also: [410] });
    const ids = [...new Set(answers.filter((a) => a.status !== 410).map((a) => a.body.ticketId as string))];
    expect(ids.length).toBeLessThanOrEqual(200);
    await expectSoldExactly(db.sql, 'sk8', stock, ids, (id) => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body));
  });

  it('cancels a waiting ticket of a split item and shows positions that never rise', async () => {
    await call('PUT', '/v1/items/wait8', { handler: 'external', lines: 8, gate: { mode: 'closed' } });
    const users = userIds(0, 40, 'w');
    const joined = await joinAll((userId) => call('POST', '/v1/items/wait8/tickets', { userId }, SVC), users);
    const positions = joined.map((a) => a.body.position as number);
    expect(new Set(positions).size).toBe(users.length);
    const first = await call('GET', `/v1/tickets/${joined[10].body.ticketId}`, undefined, null);
    expect(first.body).toMatchObject({ state: 'waiting' });
    expect(first.body.position).toBeLessThanOrEqual(positions[10]);
    const cancelled = await call('DELETE', `/v1/tickets/${joined[10].body.ticketId}`, undefined, null);
    expect(cancelled.body.state).toBe('cancelled');
    const again = await call('DELETE', `/v1/tickets/${joined[10].body.ticketId}`, undefined, null);
    expect(again.body.state).toBe('cancelled');
    expect((await call('GET', '/v1/items/wait8')).body.counts).toMatchObject({ waiting: 39, cancelled: 1 });
  });
});
