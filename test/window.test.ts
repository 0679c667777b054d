import { describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { testRedis } from './support/redis.js';

const { newPrefix } = testRedis();
const db = await testDb();
const { call } = await inProcessDaemon({ prefix: newPrefix(), databaseUrl: db.url });

describe('the sale window', () => {
  it('admits nobody after closesAt: waiting tickets end cancelled with reason closed, new joins get 410', { timeout: 30_000 }, async () => {
    const closesAt = new Date(Date.now() + 1500).toISOString();
    // A slow gate, so most tickets are still waiting when the window ends.
    await call('PUT', '/v1/items/win', { handler: 'seckill', config: { stock: 100 }, closesAt, gate: { mode: 'manual', rate: 1 } });
    const ids = (await Promise.all(['a', 'b', 'c', 'd', 'e'].map((userId) => call('POST', '/v1/items/win/tickets', { userId }, SVC)))).map((r) => r.body.ticketId as string);
    const views = await waitFor(
      () => Promise.all(ids.map((id) => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body))),
      (vs) => vs.every((v) => v.state !== 'waiting' && v.state !== 'admitted'),
    );
    const ended = views.filter((v) => v.state === 'cancelled');
    expect(ended.length).toBeGreaterThanOrEqual(3);
    for (const v of ended) expect(v.outcome).toEqual({ status: 'cancelled', reason: 'closed' });
    // Every admission happened before closesAt.
    for (const v of views.filter((x) => x.admittedAt)) expect(Date.parse(v.admittedAt)).toBeLessThan(Date.parse(closesAt));
    const late = await call('POST', '/v1/items/win/tickets', { userId: 'z' }, SVC);
    expect(late.status).toBe(410);
    expect(late.body.error.code).toBe('closed');
    expect((await call('GET', '/v1/items/win')).body.state).toBe('closed');
  });
});
