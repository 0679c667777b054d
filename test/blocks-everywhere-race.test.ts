import { describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { testRedis } from './support/redis.js';

/**
 * A block everywhere made on one daemon while another makes a new item: the block must reach the
 * item. The block's fan-out read the item ids from its daemon's copy of the set (up to
 * FLOODGATE_CACHE_MS old: here 5 s), and the new item had copied the blocks before the block came,
 * so the blocked user joined the new item (202) for good.
 */
const { newPrefix } = testRedis();
const db = await testDb();
const prefix = newPrefix();
const a = await inProcessDaemon({ prefix, databaseUrl: db.url });
const b = await inProcessDaemon({ prefix, databaseUrl: db.url, env: { FLOODGATE_CACHE_MS: '5000' } });

describe('a block everywhere and a new item at the same moment, on two daemons', () => {
  it('reaches an item another daemon made a moment before, though this daemon’s copy of the items is older', async () => {
    await a.call('PUT', '/v1/items/old-one', { handler: 'external' });
    // B reads the set of items (and keeps it for 5 s).
    expect((await b.call('GET', '/v1/items')).status).toBe(200);
    expect((await a.call('PUT', '/v1/items/new-one', { handler: 'external' })).status).toBe(201);
    expect((await b.call('PUT', '/v1/blocks/mallory')).status).toBe(200);
    const join = await a.call('POST', '/v1/items/new-one/tickets', { userId: 'mallory' }, SVC);
    // (Before: 202, a ticket for a user blocked everywhere.)
    expect([join.status, join.body.error?.code]).toEqual([403, 'blocked']);
  });

  it('a new item is registered and takes its copy of the blocks under the lock of the blocks everywhere', async () => {
    const lock = await db.sql.reserve();
    try {
      await lock`select pg_advisory_lock(hashtextextended('floodgate:op:*', 0))`;
      const put = a.call('PUT', '/v1/items/waits', { handler: 'external' });
      // Held while a block everywhere is being written (here: the test holds its lock).
      expect(await Promise.race([put.then(() => 'answered'), new Promise((r) => setTimeout(() => r('held'), 500))])).toBe('held');
      await lock`select pg_advisory_unlock(hashtextextended('floodgate:op:*', 0))`;
      expect((await put).status).toBe(201);
    } finally {
      lock.release();
    }
  });
});
