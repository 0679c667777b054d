import { describe, expect, it } from 'vitest';
import { whenDone } from './support/cleanup.js';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { proxyFor } from './support/proxy.js';
import { testRedis } from './support/redis.js';

/**
 * Postgres stops answering mid-sale without a reset (a partition, a failover that moved the
 * address): no sale's call fails until the driver's timeout (15 s by default), and Postgres read
 * as up all that time — waiting users were told an ETA counting down to nothing (position 1: 3 ms)
 * and the item `open` (a review at scale: 5,473 such polls in one 15 s stall). A sale's call
 * unanswered for 3 s now reads as Postgres away: `paused`, no ETA, nothing more admitted onto it.
 */
const { newPrefix } = testRedis();
const db = await testDb();

describe('a Postgres that stops answering mid-sale', () => {
  it('reads as paused to waiting users within seconds, not after the driver gives up', { timeout: 90_000 }, async () => {
    const { proxy, url } = await proxyFor(db.url);
    whenDone(() => proxy.close());
    const d = await inProcessDaemon({ prefix: newPrefix(), databaseUrl: url, env: { FLOODGATE_PG_TIMEOUT_MS: '30000' } });
    await d.define('st', { handler: 'seckill', config: { stock: 100 }, gate: { mode: 'manual', rate: 4, maxInFlight: 2 } });
    const ids: string[] = [];
    for (let i = 0; i < 30; i++) ids.push((await d.call('POST', '/v1/items/st/tickets', { userId: `s${i}` }, SVC)).body.ticketId as string);
    // Selling at its pace, a ticket far back told an ETA.
    await waitFor(() => d.call('GET', `/v1/tickets/${ids[0]}`, undefined, null), (r) => r.body.state === 'succeeded');
    const last = ids[ids.length - 1];
    expect((await d.call('GET', `/v1/tickets/${last}`, undefined, null)).body.etaMs).toBeGreaterThan(0);

    // Every answer from Postgres held 14 s (old connections and new alike): the next sales wait.
    proxy.delay(14_000);
    whenDone(() => proxy.delay(0));
    const heldAt = Date.now();
    const paused = await waitFor(() => d.call('GET', `/v1/tickets/${last}`, undefined, null), (r) => r.body.reason === 'paused', 12_000);
    // Before: no reason and an ETA until the sale's call came back (14 s here; the driver gives up after 15 s by default).
    expect(paused.body, `${Date.now() - heldAt} ms after Postgres fell silent`).toMatchObject({ state: 'waiting', reason: 'paused' });
    expect(paused.body.etaMs).toBeUndefined();
    expect(Date.now() - heldAt).toBeLessThan(12_000);
    expect((await d.call('GET', '/v1/items/st')).body.state).toBe('paused');
    proxy.delay(0);
  });
});
