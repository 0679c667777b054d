import type { Cluster, Redis } from 'ioredis';

/**
 * A connection to the daemon's Redis: one server (`Redis`) or a Redis Cluster (`Cluster`). Both
 * have the same command methods and typings, so modules take a `RedisLike` and never ask which;
 * what differs (a key scan, a duplicate connection) is done here, once.
 */
export type RedisLike = Redis | Cluster;

export const isCluster = (r: RedisLike): r is Cluster => 'isCluster' in r && r.isCluster === true;

/**
 * The SHA1s of the scripts a call must not run twice (redis/scripts.ts fills it): ioredis sends a
 * lost connection's unanswered commands again once it is back, and one that Redis ran before the
 * connection went would run a second time — a move of units between a split item's sub-lines
 * (+5 sent once added 10: units Postgres does not hold), an admission round (a second batch of
 * tickets leased on top of the first, whose reply was lost). The connection's wrapper
 * (infra/redis-client.ts) fails such a command instead of sending it again.
 */
export const runOnceScripts = new Set<string>();

/**
 * Calls `each` with every batch of keys matching `pattern` (SCAN … MATCH): on a cluster, on every
 * master in turn, since SCAN sees only the node it is sent to.
 */
export async function scanKeys(redis: RedisLike, pattern: string, each: (keys: string[]) => Promise<unknown>): Promise<void> {
  const nodes: Redis[] = isCluster(redis) ? redis.nodes('master') : [redis];
  for (const node of nodes) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      if (keys.length) await each(keys);
      cursor = next;
    } while (cursor !== '0');
  }
}

/**
 * Redis's TIME ([seconds, microseconds]) from one server: on a cluster the first master by address,
 * so that every call reads the same node's clock (nodes whose clocks differ would make a daemon's
 * offset to Redis's time flip, kernel/redis-time.ts).
 */
export async function serverTime(redis: RedisLike): Promise<[number, number]> {
  const address = (n: Redis) => `${n.options.host}:${n.options.port}`;
  const node = isCluster(redis) ? ([...redis.nodes('master')].sort((a, b) => address(a).localeCompare(address(b)))[0] ?? redis) : redis;
  const [seconds, micros] = await node.time();
  return [Number(seconds), Number(micros)];
}

/** A new connection with the same settings (BullMQ's workers need one of their own to block on). */
// (Two branches for the typings: the union's two duplicate() signatures cannot be called as one.)
export const duplicateConnection = (redis: RedisLike): RedisLike => (isCluster(redis) ? redis.duplicate() : redis.duplicate());

/**
 * One server's memory from its `INFO memory` as its maxmemory check counts it: used_memory less
 * mem_not_counted_for_evict (replica and AOF buffers), and maxmemory (0: none).
 */
export function countedMemory(info: string): { counted: number; max: number } {
  const field = (name: string) => Number(new RegExp(`^${name}:(\\d+)`, 'm').exec(info)?.[1] ?? 0);
  return { counted: field('used_memory') - field('mem_not_counted_for_evict'), max: field('maxmemory') };
}

/**
 * Why Redis refuses INFO to this user (a managed service's user without `@dangerous`, or the
 * command renamed away), or null when it answers. Asked of one server (a cluster's first master).
 */
export async function infoRefusal(redis: RedisLike): Promise<string | null> {
  const node: Redis = isCluster(redis) ? redis.nodes('master')[0] : redis;
  if (!node) return null;
  return node.info('server').then(
    () => null,
    (err: Error) => (/NOPERM|unknown command|ERR unknown/i.test(String(err?.message)) ? String(err.message) : null),
  );
}

/** A server's `maxmemory-policy` from its `INFO memory` ('' if it does not say). */
export const evictionPolicyOf = (info: string) => /^maxmemory_policy:(\S+)/m.exec(info)?.[1] ?? '';

/**
 * How full Redis is: the highest counted ÷ maxmemory over its servers (every master on a cluster;
 * one that does not answer is left out), 0 when none has a maxmemory set; and `evicting`, the
 * first `maxmemory-policy` other than `noeviction` a server reports (null: none). Null when no
 * server answered.
 */
export async function memoryState(redis: RedisLike): Promise<{ ratio: number; evicting: string | null } | null> {
  const nodes: Redis[] = isCluster(redis) ? redis.nodes('master') : [redis];
  const read = await Promise.all(
    nodes.map((node) =>
      node.info('memory').then(
        (info) => {
          const { counted, max } = countedMemory(info);
          const policy = evictionPolicyOf(info);
          return { ratio: max > 0 ? counted / max : 0, evicting: policy && policy !== 'noeviction' ? policy : null };
        },
        () => null,
      ),
    ),
  );
  const known = read.filter((r) => r !== null);
  return known.length ? { ratio: Math.max(...known.map((r) => r.ratio)), evicting: known.find((r) => r.evicting)?.evicting ?? null } : null;
}

export const memoryRatio = async (redis: RedisLike): Promise<number | null> => (await memoryState(redis))?.ratio ?? null;

/**
 * Why a Redis set to evict keys cannot hold lines: at its maxmemory it drops keys without a word —
 * a line's users (a user's second ticket: a webhook's second order), its gate (an operator's
 * 2/s cap read as the default auto gate), its stock counter or its tickets (a sale that never
 * resumed), BullMQ's job locks (a job run twice). A review saw each of these.
 */
export const evictionHazard = (policy: string) =>
  `Redis's maxmemory-policy is ${policy}: at its memory limit it drops keys the lines cannot lose (tickets, users, gates, stock, job locks). Set maxmemory-policy noeviction (redis.conf, or CONFIG SET maxmemory-policy noeviction); Floodgate refuses new joins itself before Redis is full (FLOODGATE_REDIS_MEMORY_LIMIT).`;
