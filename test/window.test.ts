import { describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { testRedis } from './support/redis.js';
import { joinAll } from './support/joins.js';

const { newPrefix } = testRedis();
const db = await testDb();
const { call } = await inProcessDaemon({ prefix: newPrefix(), databaseUrl: db.url });

describe('the sale window', () => {
  it('admits nobody after closesAt: waiting tickets end cancelled with reason closed, new joins get 410', { timeout: 30_000 }, async () => {
    // Everyone joins first, behind a closed gate; then the window is set to end 1.5 s from now,
    // behind a slow gate, so most tickets are still waiting when it ends (a window set before the
    // joins ended before them on a loaded machine: the joins got 410).
    await call('PUT', '/v1/items/win', { handler: 'seckill', config: { stock: 100 }, gate: { mode: 'closed' } });
    const ids = (await joinAll((userId) => call('POST', '/v1/items/win/tickets', { userId }, SVC), ['a', 'b', 'c', 'd', 'e'])).map((r) => r.body.ticketId as string);
    const closesAt = new Date(Date.now() + 1500).toISOString();
    expect((await call('PUT', '/v1/items/win', { handler: 'seckill', config: { stock: 100 }, closesAt, gate: { mode: 'manual', rate: 1 } })).status).toBe(200);
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

  it('ends the tickets waiting behind a closed gate when the window ends', { timeout: 30_000 }, async () => {
    // The dispatcher decides a closed gate from its held view; the views other readers keep fresh
    // (the series recorder, joins) once hid the window's end from it, and the line waited forever.
    const closesAt = new Date(Date.now() + 1500).toISOString();
    expect((await call('PUT', '/v1/items/shut', { handler: 'seckill', config: { stock: 100 }, closesAt, gate: { mode: 'closed' } })).status).toBe(201);
    const ids = (await joinAll((userId) => call('POST', '/v1/items/shut/tickets', { userId }, SVC), ['a', 'b'])).map((r) => r.body.ticketId as string);
    const views = await waitFor(
      () => Promise.all(ids.map((id) => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body))),
      (vs) => vs.every((v) => v.state !== 'waiting'),
    );
    for (const v of views) expect([v.state, v.outcome]).toEqual(['cancelled', { status: 'cancelled', reason: 'closed' }]);
    expect((await call('GET', '/v1/items/shut')).body.state).toBe('closed');
  });
});
