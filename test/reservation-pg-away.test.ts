import { describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { whenDone } from './support/cleanup.js';
import { proxyFor } from './support/proxy.js';
import { testRedis } from './support/redis.js';

/**
 * An item held while its every unit is reserved runs no sale: only the reservation sweep asks
 * Postgres. Postgres gone then, nothing marked it away — the item read `held` and its waiting
 * users `awaiting_returns` for the whole outage (a review: 8 s of `/readyz` failing on Postgres
 * beside them), though no unit can come back until it returns. The sweep's failures mark it away
 * as the sales' do: `paused`, as the README's faults table says.
 */
const { newPrefix } = testRedis();
const db = await testDb();

type View = { state: string; reason?: string };

describe('an item held on its reservations while Postgres is away', () => {
  it('reads paused, not awaiting returns, and held again once Postgres is back', { timeout: 60_000 }, async () => {
    const { proxy, url } = await proxyFor(db.url);
    whenDone(() => proxy.close());
    const { call, define } = await inProcessDaemon({ prefix: newPrefix(), databaseUrl: url });
    await define('held', { handler: 'seckill', config: { stock: 1, reserveMs: 600_000 } });
    const winner = (await call('POST', '/v1/items/held/tickets', { userId: 'w' }, SVC)).body.ticketId as string;
    await waitFor(() => call('GET', `/v1/tickets/${winner}`, undefined, null).then((r) => r.body as View), (v) => v.state === 'succeeded');
    const waiting = (await call('POST', '/v1/items/held/tickets', { userId: 'u' }, SVC)).body.ticketId as string;
    const view = () => call('GET', `/v1/tickets/${waiting}`, undefined, null).then((r) => r.body as View);
    const item = () => call('GET', '/v1/items/held').then((r) => r.body as { state: string });
    expect(await waitFor(view, (v) => v.reason === 'awaiting_returns')).toMatchObject({ state: 'waiting', reason: 'awaiting_returns' });
    expect((await item()).state).toBe('held');

    await proxy.cut();
    // (Before: `awaiting_returns` and `held` for as long as Postgres was away.)
    expect(await waitFor(view, (v) => v.reason === 'paused', 10_000)).toMatchObject({ state: 'waiting', reason: 'paused' });
    expect((await item()).state).toBe('paused');

    await proxy.restore();
    expect(await waitFor(view, (v) => v.reason === 'awaiting_returns', 20_000)).toMatchObject({ state: 'waiting', reason: 'awaiting_returns' });
    expect((await item()).state).toBe('held');
  });
});
