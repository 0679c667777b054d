import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, inject } from 'vitest';

export const redisUrl = () => inject('redisUrl');

/** A Redis connection and a key prefix of this test file's own; its keys are deleted afterwards. */
export function testRedis(): { redis: Redis; prefix: string; newPrefix(): string } {
  const redis = new Redis(redisUrl(), { enableAutoPipelining: true, maxRetriesPerRequest: 3 });
  const root = `fgt:${randomBytes(4).toString('hex')}:`;
  let n = 0;
  afterAll(async () => {
    await unlinkPrefix(redis, root);
    redis.disconnect();
  });
  return { redis, prefix: root, newPrefix: () => `${root}${++n}:` };
}

/** Every key whose name matches the glob `pattern` (SCAN, a thousand at a time). */
export async function keysMatching(redis: Redis, pattern: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, found] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    keys.push(...found);
    cursor = next;
  } while (cursor !== '0');
  return keys;
}

/** Deletes every key under the prefix (as a Redis loss would, for that prefix). */
export async function unlinkPrefix(redis: Redis, prefix: string): Promise<void> {
  // Every key listed first, then gone in one command: a daemon running meanwhile sees the loss at
  // once, as after a flush. (Unlinked scan batch by scan batch, over a Redis shared with the other
  // test files, the loss took many round trips, and a daemon's loss check could restore an item
  // in the middle of it — then lose the keys it had just written to the rest of the scan.)
  const keys = await keysMatching(redis, `${prefix}*`);
  for (let i = 0; i < keys.length; i += 100_000) await redis.unlink(...keys.slice(i, i + 100_000));
}

/**
 * Every key of one item under `prefix`, dumped: what a Redis snapshot holds of it (rollbackItem
 * puts it back). A split item's sub-lines too (`{item~k}`): a rollback of the item's own keys
 * alone is no state a real one leaves.
 */
export async function snapshotItem(redis: Redis, prefix: string, itemId: string): Promise<Map<string, Buffer | null>> {
  const keys = [...(await keysMatching(redis, `${prefix}{${itemId}}:*`)), ...(await keysMatching(redis, `${prefix}{${itemId}~*}:*`))];
  return new Map(await Promise.all(keys.map(async (k) => [k, await redis.dumpBuffer(k)] as const)));
}

/** Rolls the item's keys back to the snapshot, as a Redis restarted from older data would: later keys go, the snapshot's come back as they were. */
export async function rollbackItem(redis: Redis, prefix: string, itemId: string, snap: Map<string, Buffer | null>): Promise<void> {
  for (const k of (await snapshotItem(redis, prefix, itemId)).keys()) if (!snap.has(k)) await redis.del(k);
  for (const [k, v] of snap) if (v) await redis.restore(k, 0, v, 'REPLACE');
}

/** Resolves once `conn` is ready (at once if it is): after a cut or a kill, when it has reconnected. */
export const untilReady = (conn: { status: string; once(event: 'ready', fn: () => void): unknown }) =>
  new Promise<void>((r) => (conn.status === 'ready' ? r() : conn.once('ready', () => r())));
