import type { RedisLike } from '../redis/client.js';
import { itemKeys, opRevsKey } from '../redis/keys.js';

/**
 * Redis's side of the operators' write revisions (catalog/op-revs.ts): the revision Redis last
 * applied, kept beside the data it marks so that a rollback takes both together — an item's in
 * its meta (`opRev`, on the item's slot), the blocks everywhere's ('*') and the highest applied
 * ('max') in a global zset.
 */
export interface OpMarks {
  of(scope: string): Promise<number>;
  /** Marks `scope` applied at `rev`, and raises the highest (unless `top: false`: only a check that compared every scope may). */
  set(scope: string, rev: number, opts?: { top: boolean }): Promise<void>;
  /** The highest revision marked (0: none: a Redis that lost it, or never had one). */
  top(): Promise<number>;
  raiseTop(rev: number): Promise<void>;
}

export function createOpMarks(redis: RedisLike, prefix: string): OpMarks {
  const key = opRevsKey(prefix);
  return {
    async of(scope) {
      const v = scope === '*' ? await redis.zscore(key, '*') : await redis.hget(itemKeys(prefix, scope).meta, 'opRev');
      return v === null ? 0 : Number(v);
    },
    async set(scope, rev, opts = { top: true }) {
      if (scope === '*') await redis.zadd(key, 'GT', rev, '*');
      // (A plain write: a restore's mark, read before a write's, may lower the write's. That costs
      // the item one needless repair at a full compare, never a missed one: a mark is only ever
      // compared as "at least Postgres's".)
      else await redis.hset(itemKeys(prefix, scope).meta, 'opRev', rev);
      if (opts.top) await redis.zadd(key, 'GT', rev, 'max');
    },
    async top() {
      return Number((await redis.zscore(key, 'max')) ?? 0);
    },
    async raiseTop(rev) {
      await redis.zadd(key, 'GT', rev, 'max');
    },
  };
}
