import { describe, expect, it } from 'vitest';
import { whenDone } from './support/cleanup.js';
import { inProcessDaemon, SVC } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { proxyFor } from './support/proxy.js';
import { rollbackItem, snapshotItem, testRedis } from './support/redis.js';
import { followTicket } from './support/ticket-stream.js';

/**
 * One ticket's read that waits on Postgres — a ticket Redis no longer holds (a rollback took it)
 * is looked for in the outcome ledger, and Postgres answers slowly — held the event streams' shared
 * watch: every stream of every item on the daemon sent nothing until that read gave up (the
 * driver's timeout, 15 s by default), past the contract's keep-alive after 10 s of silence (a
 * review: 16.8 s and 15.8 s without a byte on another item's streams). A slow read now holds only
 * its own stream.
 */
const { redis, newPrefix } = testRedis();
const db = await testDb();

describe('event streams while one ticket is read from a slow Postgres', () => {
  it("go on: another item's stream gets its keep-alive on time", { timeout: 90_000 }, async () => {
    const { proxy, url } = await proxyFor(db.url);
    whenDone(() => proxy.close());
    const prefix = newPrefix();
    const d = await inProcessDaemon({ prefix, databaseUrl: url, env: { FLOODGATE_PG_TIMEOUT_MS: '40000' } });
    await d.define('k', { handler: 'external', gate: { mode: 'closed' } });
    await d.define('h', { handler: 'external', gate: { mode: 'closed' } });
    const join = async (item: string, userId: string) => (await d.call('POST', `/v1/items/${item}/tickets`, { userId }, SVC)).body.ticketId as string;
    const k1 = await join('k', 'k1');
    for (const u of ['h1', 'h2', 'h3']) await join('h', u);
    const snap = await snapshotItem(redis, prefix, 'h');
    const lost = await join('h', 'lost');

    const ac = new AbortController();
    whenDone(() => ac.abort());
    const fetcher = { request: (path: string) => fetch(`${d.daemon.url}${path}`, { signal: ac.signal }) };
    const onK = followTicket(fetcher, k1);
    const onLost = followTicket(fetcher, lost);
    void onK.done.catch(() => {});
    void onLost.done.catch(() => {});
    expect((await onK.next())?.state).toBe('waiting');
    expect((await onLost.next())?.state).toBe('waiting');
    const openedAt = Date.now();

    // Postgres holds every answer 16 s from now on; then Redis forgets the lost ticket, whose next
    // look goes to the ledger through it.
    proxy.delay(16_000);
    whenDone(() => proxy.delay(0));
    await rollbackItem(redis, prefix, 'h', snap);

    // The keep-alive is due 10 s after the stream's last write; 3 s of slack for a busy machine.
    const deadline = openedAt + 13_000;
    while (onK.comments() === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(onK.comments(), `no keep-alive on k's stream ${Date.now() - openedAt} ms after it opened`).toBeGreaterThanOrEqual(1); // before: none until the slow read ended (~16 s)
    proxy.delay(0);
    ac.abort();
  });
});
