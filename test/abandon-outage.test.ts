import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { createTouchBuffer } from '../src/queue/touches.js';
import { itemKeys } from '../src/redis/keys.js';
import { SERVICE, testApp } from './support/app.js';
import { whenDone } from './support/cleanup.js';
import { ownRedis } from './support/redis-server.js';

/**
 * Abandonment (an item's `abandonAfterMs`) expires a ticket whose holder stopped polling. While
 * Redis is out of reach nothing records a poll (they answer 503), and a batch of poll times being
 * written as the outage began was thrown away: once Redis came back, the next admission expired
 * the head tickets of holders who had polled all along.
 */
const t = await testApp();
const server = await ownRedis();

describe('abandonment across a Redis outage', () => {
  it('counts again from the reconnect: holders who polled until the outage are not expired', async () => {
    const clock = t.manualClock();
    const { call, queue } = t.build({ clock });
    const item = t.uniqueItem();
    expect((await call('PUT', `/v1/items/${item}`, { handler: 'external', abandonAfterMs: 20_000, gate: { mode: 'manual' } })).status).toBe(201);
    const ids: string[] = [];
    for (const u of ['a', 'b', 'c']) ids.push((await call('POST', `/v1/items/${item}/tickets`, { userId: u }, SERVICE)).body.ticketId);
    for (const id of ids) await call('GET', `/v1/tickets/${id}`, undefined, null);
    await queue.tickets.flush();
    // 25 s of outage: their polls answered 503, recorded nowhere. Then the daemon reconnects.
    clock.advance(25_000);
    await queue.tickets.restartIdleClocks();
    const pulled = (await call('POST', `/v1/items/${item}/pull`, { max: 10 }, SERVICE)).body.tickets.map((p: { ticketId: string }) => p.ticketId);
    expect(pulled).toEqual(ids); // before: none; all three expired / abandoned
    // And from then on it counts as before: a ticket nobody polls for 20 s after the reconnect goes.
    const late = (await call('POST', `/v1/items/${item}/tickets`, { userId: 'd' }, SERVICE)).body.ticketId;
    clock.advance(21_000);
    expect((await call('POST', `/v1/items/${item}/pull`, { max: 10 }, SERVICE)).body.tickets).toEqual([]);
    expect((await call('GET', `/v1/tickets/${late}`, undefined, null)).body).toMatchObject({ state: 'expired', outcome: { reason: 'abandoned' } });
  });

  it('keeps a batch of poll times Redis did not take, and writes it once Redis is back', async () => {
    const redis = new Redis(server.url, { maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => 50 });
    redis.on('error', () => {});
    whenDone(() => redis.quit().then(() => {}).catch(() => redis.disconnect()));
    const touches = createTouchBuffer(redis, 'fg:');
    touches.touch('it', 7, 1000);
    await server.kill();
    await expect(touches.flush()).rejects.toThrow();
    touches.touch('it', 8, 2000);
    await server.start();
    await expect.poll(() => redis.status, { timeout: 10_000 }).toBe('ready');
    await touches.flush();
    const page = itemKeys('fg:', 'it').pollPage(7);
    expect(await redis.hgetall(page)).toEqual({ 7: '1000', 8: '2000' }); // before: 8 alone
  });
});
