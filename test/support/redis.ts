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

/** Deletes every key under the prefix (as a Redis loss would, for that prefix). */
export async function unlinkPrefix(redis: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    if (keys.length) await redis.unlink(...keys);
    cursor = next;
  } while (cursor !== '0');
}
