import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { systemClock } from '../src/kernel/clock.js';
import { createLine } from '../src/queue/line.js';
import { createTicketWatch } from '../src/queue/ticket-watch.js';
import { whenDone } from './support/cleanup.js';
import { ownRedis } from './support/redis-server.js';

/**
 * An event stream is kept alive while its item cannot be read: with Redis away the watch skipped
 * the item's watchers altogether, and a stream sent no byte for the whole outage (28 s in a
 * reviewer's run) against the contract's keep-alive after 10 s of silence. Proxies and browsers
 * that time out a silent stream dropped it, and the waiting page went on saying "live updates".
 */
const server = await ownRedis();

describe('ticket event streams while Redis is away', () => {
  it('go on sending keep-alives', async () => {
    const redis = new Redis(server.url, { maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => 50, commandTimeout: 300 });
    redis.on('error', () => {});
    whenDone(() => redis.quit().then(() => {}).catch(() => redis.disconnect()));
    await expect.poll(() => redis.status, { timeout: 10_000 }).toBe('ready');
    const queue = createLine({ redis, prefix: 'fgw:', clock: systemClock, cacheMs: 0 });
    await queue.definitions.define(
      { itemId: 'sse', handler: 'external', config: {}, capacity: null, abandonAfterMs: null, opensAt: null, closesAt: null, rejoin: 'any' },
      { mode: 'closed', rate: null, maxInFlight: null },
      { reopen: false },
    );
    const { ticket } = await queue.tickets.join('sse', 'u1', null);
    const first = await queue.tickets.status(ticket.ticketId);
    const watch = createTicketWatch({ queue, clock: systemClock, tickMs: 50, heartbeatMs: 200, onError: () => {} });
    const beats: number[] = [];
    let ended = false;
    const stop = watch.watch(ticket.ticketId, first, { view: () => {}, heartbeat: () => void beats.push(Date.now()), end: () => void (ended = true) });
    whenDone(stop);

    await server.kill();
    const downAt = Date.now();
    // (Polled: a count after a fixed 1.5 s is a rate, which a loaded machine's timers stretch.)
    await expect.poll(() => beats.filter((t) => t >= downAt).length, { timeout: 10_000 }).toBeGreaterThanOrEqual(3); // before: 0
    expect(ended).toBe(false);
    await server.start();
  });
});
