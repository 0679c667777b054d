import type { Redis } from 'ioredis';
import type { Clock } from '../kernel/clock.js';
import { fail } from '../kernel/errors.js';
import { activeItemsKey, itemsSetKey, itemsVersionKey } from '../redis/keys.js';
import { createItemCache, type CachedItem } from './item-cache.js';

/** The items whose lines this process knows, their cached views, and which of them need work now. */
export interface LineItems {
  item(itemId: string, opts?: { fresh?: boolean }): Promise<CachedItem | null>;
  /** The cached item view as it is, without reading Redis (null if never loaded). */
  peek(itemId: string): CachedItem | null;
  /** Forgets this process's view of the item: the next read goes to Redis (after a write outside the line's scripts). */
  invalidate(itemId: string): void;
  itemIds(): Promise<string[]>;
  /**
   * The items that need the background loops (dispatch, gate control, lease sweep, outcome
   * ledger) now: those with a join, an admission, a lease, an outcome or a cut in the last minute
   * (or a lease running longer), shared by all daemons. An idle item costs those loops nothing.
   */
  activeItemIds(): Promise<string[]>;
  /** Keeps an item among the active ones (a loop that sees work left: tickets waiting, entries unwritten). */
  keepActive(itemId: string, until?: number): void;
  /** Marks every item active once (a daemon's start: nothing is missed after an upgrade or a restart). */
  activateAll(): Promise<void>;
}

/** What the line's other parts use besides LineItems. */
export interface ItemDirectory extends LineItems {
  /** The item's view, or item_not_found. */
  must(itemId: string): Promise<CachedItem>;
  /** Whether the item exists, answered from the shared item set (see below). */
  isKnown(itemId: string): Promise<boolean>;
  /** Adds the item to the shared set (defined) or removes it (dropped). */
  added(itemId: string): Promise<void>;
  removed(itemId: string): Promise<void>;
}

/**
 * The active set: each daemon raises an item's "until" (ZADD GT) when it does work on it, at most
 * once per ACTIVE_SLACK_MS per item (so a flood of joins costs one ZADD per item every few
 * seconds), and the loops read the set at most once per 100 ms.
 */
export const ACTIVE_GRACE_MS = 60_000;
const ACTIVE_SLACK_MS = 5_000;

export function createItemDirectory(deps: { redis: Redis; prefix: string; clock: Clock; cacheMs: number }): ItemDirectory {
  const { redis, prefix, clock } = deps;
  const cache = createItemCache({ redis, prefix, clock, ttlMs: deps.cacheMs });

  /**
   * This process's copy of the set of item ids, reloaded when the shared version key moved. It is
   * what makes an id naming an unknown item cheap: a miss (a forged id, or an item just made on
   * another daemon) is answered by a version check that started after the miss arrived — never
   * by an older one, so a new item is never refused — and all the misses that arrive while one
   * check runs share the next one: one GET per round trip at most, however many arrive.
   */
  const known = { ids: new Set<string>(), ver: null as string | null, checkedAt: -Infinity, loading: null as Promise<Set<string>> | null, startedAt: -Infinity };
  function loadKnown(): Promise<Set<string>> {
    known.startedAt = performance.now();
    known.loading = (async () => {
      const ver = await redis.get(itemsVersionKey(prefix));
      if (ver === null || ver !== known.ver) known.ids = new Set(await redis.smembers(itemsSetKey(prefix)));
      known.ver = ver;
      known.checkedAt = clock.now();
      return known.ids;
    })().finally(() => (known.loading = null));
    return known.loading;
  }
  function knownIds(): Promise<Set<string>> | Set<string> {
    if (clock.now() - known.checkedAt < deps.cacheMs) return known.ids;
    return known.loading ?? loadKnown();
  }

  const activeUntil = new Map<string, number>();
  const keepActive = (itemId: string, until = clock.now() + ACTIVE_GRACE_MS) => {
    if ((activeUntil.get(itemId) ?? 0) >= until - ACTIVE_SLACK_MS) return;
    if (activeUntil.size > 100_000) activeUntil.clear();
    activeUntil.set(itemId, until);
    redis.zadd(activeItemsKey(prefix), 'GT', until, itemId).catch(() => activeUntil.delete(itemId));
  };
  const active = { ids: [] as string[], at: -Infinity, loading: null as Promise<string[]> | null, prunedAt: -Infinity };
  function activeItemIds(): Promise<string[]> | string[] {
    const now = clock.now();
    if (now - active.at < 100) return active.ids;
    active.loading ??= (async () => {
      const key = activeItemsKey(prefix);
      if (now - active.prunedAt > 60_000) {
        active.prunedAt = now;
        await redis.zremrangebyscore(key, '-inf', now - 3_600_000);
      }
      active.ids = await redis.zrangebyscore(key, now, '+inf');
      active.at = now;
      return active.ids;
    })().finally(() => (active.loading = null));
    return active.loading;
  }

  return {
    item: async (itemId, opts) => {
      if (opts?.fresh) cache.invalidate(itemId);
      return cache.get(itemId);
    },
    peek: (itemId) => cache.peek(itemId),
    invalidate: (itemId) => cache.invalidate(itemId),
    must: async (itemId) => (await cache.get(itemId)) ?? fail('item_not_found', 'No such item.'),
    itemIds: async () => [...(await knownIds())],
    activeItemIds: async () => activeItemIds(),
    keepActive,
    async activateAll() {
      const until = clock.now() + ACTIVE_GRACE_MS;
      activeUntil.clear();
      active.at = -Infinity;
      const ids = [...(await knownIds())];
      for (let i = 0; i < ids.length; i += 1000) {
        const chunk = ids.slice(i, i + 1000);
        await redis.zadd(activeItemsKey(prefix), 'GT', ...chunk.flatMap((id) => [until, id]));
      }
    },
    async isKnown(itemId) {
      if ((await knownIds()).has(itemId)) return true;
      const arrived = performance.now();
      for (;;) {
        if (known.loading && known.startedAt >= arrived) return (await known.loading).has(itemId);
        if (known.loading) await known.loading.catch(() => {});
        else return (await loadKnown()).has(itemId);
      }
    },
    async added(itemId) {
      await redis.multi().sadd(itemsSetKey(prefix), itemId).incr(itemsVersionKey(prefix)).exec();
      known.ids.add(itemId);
      cache.invalidate(itemId);
    },
    async removed(itemId) {
      await redis.multi().srem(itemsSetKey(prefix), itemId).incr(itemsVersionKey(prefix)).exec();
      known.ids.delete(itemId);
    },
  };
}
