import { randomInt } from 'node:crypto';
import type { RedisLike } from '../redis/client.js';
import type { Clock } from '../kernel/clock.js';
import { fail } from '../kernel/errors.js';
import { STEP_MS as CLOCK_STEP_MS } from '../kernel/redis-time.js';
import { activeItemsKey, announcedItemsKey, changedItemsKey, itemsSetKey, itemsVersionKey, wakeItemsKey } from '../redis/keys.js';
import type { ItemSnapshot } from './snapshot.js';
import { createItemCache, type CachedItem } from './item-cache.js';

/** The items whose lines this process knows, their cached views, and which of them need work now. */
export interface LineItems {
  item(itemId: string, opts?: { fresh?: boolean }): Promise<CachedItem | null>;
  /** Whether the shared set lists the item now (one SISMEMBER). */
  listed(itemId: string): Promise<boolean>;
  /** Whether the item exists, answered from the shared item set (its copy checked against its version key). */
  isKnown(itemId: string): Promise<boolean>;
  /** The cached item view as it is, without reading Redis (null if never loaded). */
  peek(itemId: string): CachedItem | null;
  /** Forgets this process's view of the item: the next read goes to Redis (after a write outside the line's scripts). */
  invalidate(itemId: string): void;
  /**
   * Lets go of what this process holds of items `keep` refuses (removed ones, daemon.ts: missing
   * from the set in two reads a minute apart): their views and their change notices. Kept, a
   * daemon held ~3.5 KB for every item it had ever seen (1,000 items a day: 1.3 GB a year).
   */
  forget(keep: (itemId: string) => boolean): void;
  /** Every item id; `fresh`: from a read of the shared set that started after this call (not this process's copy, which may be FLOODGATE_CACHE_MS old). */
  itemIds(opts?: { fresh?: boolean }): Promise<string[]>;
  /**
   * The set of ids this process holds (not a copy: never change it). A new object whenever the
   * shared set is read again (its version key moved or went: another daemon's change, a flush);
   * this process's own definitions and drops change it in place. So the same object means "no
   * change from elsewhere", which is what the catalog's loss check needs (catalog.ts).
   */
  itemIdSet(): Promise<ReadonlySet<string>>;
  /**
   * The items that need the background loops (dispatch, gate control, lease sweep, outcome
   * ledger) now: those with a join, an admission, a lease, an outcome or a cut in the last minute
   * (or a lease running longer), shared by all daemons. An idle item costs those loops nothing.
   */
  activeItemIds(): Promise<string[]>;
  /** Keeps an item among the active ones (a loop that sees work left: tickets waiting, entries unwritten). */
  keepActive(itemId: string, until?: number): void;
  /**
   * Keeps the item active, or has it made active later (a wake), as its view says its line needs
   * (loopNeed); a join that needs neither now writes a change notice only, so held views of the
   * item are read again without making it active.
   */
  keepAsNeeded(snap: ItemSnapshot, opts?: { joining?: boolean }): void;
  /**
   * Marks every item active for ACTIVATE_ALL_MS, and no held view (nor the copy of the item set)
   * trusted until read again: a daemon's start and a Redis reconnect, so nothing an outage, a crash
   * or an upgrade left undone is missed (a loop that finds work keeps its item active). The loops
   * have no other full pass.
   */
  activateAll(): Promise<void>;
  /**
   * A change notice: this process changed the item in a way that needs no loop (defined it,
   * wrote its gate or its stock), so every daemon's held view of it is no longer trusted, but the
   * item is not made active.
   */
  announce(itemId: string): Promise<void>;
  /**
   * The held views that are still true without reading Redis: read after the item's last change
   * notice (shared by all daemons: `announce`, and every `keepActive`, which covers the line's
   * own work). Idle items are served from these at no Redis cost; the lookup answers null for the
   * others (read them with item()). One read of the notices since the last call, at most every 100 ms.
   */
  heldViews(): Promise<(itemId: string) => CachedItem | null>;
  /**
   * The held view of an item if nothing was announced for it (a definition, a restock, a
   * reopening: `announce`) since it was read, judged on a read of the announcements that began
   * after this call, so none made before the call is missed. Calls that arrive while such a read
   * runs share the next one (one read per round trip at most, however many ask). The loops' own
   * notices do not count: an ended item's leases and settles do not reopen it.
   */
  unannouncedNow(itemId: string): Promise<CachedItem | null>;
  /**
   * Every item's view, by id: the held ones as they are, the others read from Redis 200 at a time
   * (ten thousand reads at once queue behind each other past the Redis command timeout: the item
   * list answered 503 so). For the item list and a metrics scrape.
   */
  allViews(): Promise<CachedItem[]>;
}

/** What the line's other parts use besides LineItems. */
export interface ItemDirectory extends LineItems {
  /** The item's view, or item_not_found. */
  must(itemId: string): Promise<CachedItem>;
  /** Adds the item to the shared set (defined) or removes it (dropped). */
  added(itemId: string): Promise<void>;
  removed(itemId: string): Promise<void>;
}

/**
 * The active set: each daemon raises an item's "until" (ZADD GT) when it does work on it, at most
 * once per ACTIVE_SLACK_MS per item (so a flood of joins costs one ZADD per item every few
 * seconds), and the loops read the set at most once per 100 ms. A ZADD that fails is sent again
 * before the next read, so an item is never left out by a lost announcement.
 *
 * The change notices: zset itemId → the latest time the item may have changed. keepActive writes
 * `until − ACTIVE_GRACE_MS + ACTIVE_SLACK_MS` there (a change it skipped announcing, within the
 * slack of an earlier one, happened before that), announce() writes now. A view read after an
 * item's notice is true until the next one: that is what lets the item list, /metrics and
 * retention serve 10,000 idle items from memory.
 */
export const ACTIVE_GRACE_MS = 60_000;
export const ACTIVE_SLACK_MS = 5_000;
/**
 * How far ahead a change notice is stamped: two daemons' clocks may disagree by up to twice the
 * step redis-time.ts leaves alone (each within it of Redis's), and more by the error of each one's
 * offset (half a round trip, drift between measurements); 500 ms in all. Stamped with the
 * announcer's own time, a notice from a daemon 95 ms behind looked older than a view another
 * daemon had read before the change: a restock was not seen (a newcomer refused `410 sold_out`
 * from memory) and an idle item's list entry stayed old for good. A view read within this long
 * after a change is read again, which costs nothing that matters.
 */
const NOTICE_AHEAD_MS = 2 * CLOCK_STEP_MS + 300;
/**
 * How long a start or a Redis reconnect (activateAll) makes every item active: long enough for
 * every loop to look at each line a few times (the slowest, the stock keeper, runs every 2 s and
 * reconciles an item once it has rested a round), and each loop that finds work there keeps its
 * item active as it always does (the dispatcher a line with tickets in it or out, the ledger one
 * with outcomes to write, the doubt resolver one in doubt: ACTIVE_GRACE_MS from each look). It
 * was ACTIVE_GRACE_MS: after a reconnect, a daemon with 2,000 items whose lines were empty spent
 * 0.4-0.8 cores and sent Redis 40,000 commands a second for the whole minute (measured), every
 * loop visiting every item — on a bad day, the CPU the sale resuming needed.
 */
export const ACTIVATE_ALL_MS = 10_000;

/**
 * What an item's line needs of the loops now, from its view: `true` (keep it active), a time (ms)
 * from which it will (make it active then), or `false` (nothing until a change: an empty line, or
 * tickets waiting behind a closed gate with none out). A closed gate is opened only by a change
 * that makes its item active (catalog's patchGate, a re-definition), so such a line waits at no
 * cost: 1,000 of them, one ticket each, kept a daemon at 0.6-0.85 cores while every loop visited
 * them. Only the window's end (its cut), its start and a pre-queue's draw come by the clock: those are wakes.
 * `joining`: a ticket is being added to the line the view shows.
 */
export function loopNeed(s: ItemSnapshot, now: number, joining = false): boolean | number {
  if (s.counts.admitted > 0 || s.inDoubt > 0) return true;
  let at = Infinity;
  if (s.draw && !s.draw.drawn && s.def.opensAt !== null) at = s.def.opensAt;
  if (joining || s.counts.waiting > 0) {
    // A line whose opensAt an operator moved into the future admits nobody until then: a wake.
    const notOpen = s.def.opensAt !== null && now < s.def.opensAt;
    if (s.gate.mode !== 'closed' && !notOpen) return true;
    if (notOpen) at = Math.min(at, s.def.opensAt!);
    if (s.def.closesAt !== null && !s.closed) at = Math.min(at, s.def.closesAt);
  }
  if (at === Infinity) return false;
  return at <= now ? true : at;
}

/**
 * A read shared by whoever waits for it: `start()` begins one, or joins the one running;
 * `after(t)` gives one that began at or after `t` (performance.now()): a caller that must not be
 * answered by a read older than its arrival waits for the next, with every caller that arrived
 * meanwhile — one read per round trip at most, however many ask.
 */
function sharedRead<T>(read: () => Promise<T>) {
  let loading: Promise<T> | null = null;
  let startedAt = -Infinity;
  const start = (): Promise<T> => {
    if (loading) return loading;
    startedAt = performance.now();
    const run: Promise<T> = read().finally(() => {
      if (loading === run) loading = null;
    });
    return (loading = run);
  };
  return {
    start,
    async after(arrived: number): Promise<T> {
      for (;;) {
        if (loading && startedAt >= arrived) return loading;
        if (loading) await loading.catch(() => {});
        else return start();
      }
    },
  };
}

export function createItemDirectory(deps: { redis: RedisLike; prefix: string; clock: Clock; cacheMs: number; storeAway?: (handler: string, itemId: string) => boolean; cxPage?: number }): ItemDirectory {
  const { redis, prefix, clock } = deps;
  const cache = createItemCache({ redis, prefix, clock, ttlMs: deps.cacheMs, storeAway: deps.storeAway, cxPage: deps.cxPage });

  /**
   * This process's copy of the set of item ids, reloaded when the shared version key moved. It is
   * what makes an id naming an unknown item cheap: a miss (a forged id, or an item just made on
   * another daemon) is answered by a version check that started after the miss arrived — never
   * by an older one, so a new item is never refused — and all the misses that arrive while one
   * check runs share the next one: one GET per round trip at most, however many arrive.
   */
  const known = { ids: new Set<string>(), ver: null as string | null, checkedAt: -Infinity };
  const knownRead = sharedRead(async () => {
    const ver = await redis.get(itemsVersionKey(prefix));
    if (ver === null || ver !== known.ver) known.ids = new Set(await redis.smembers(itemsSetKey(prefix)));
    known.ver = ver;
    known.checkedAt = clock.now();
    return known.ids;
  });
  /**
   * Moves the shared version. A version key that is gone (Redis flushed or restarted empty) starts
   * again from a random number, not from 1: counted from 1 again, it could reach the very value a
   * daemon last read, and that daemon would go on trusting its copy of the lost set (and its loss
   * check would see nothing missing).
   */
  async function bumpVersion(): Promise<number> {
    await redis.set(itemsVersionKey(prefix), String(randomInt(2 ** 47)), 'NX');
    return redis.incr(itemsVersionKey(prefix));
  }
  function knownIds(): Promise<Set<string>> | Set<string> {
    if (clock.now() - known.checkedAt < deps.cacheMs) return known.ids;
    return knownRead.start();
  }

  const activeUntil = new Map<string, number>();
  /** keepActive calls whose ZADD failed: sent again before the active set is next read. */
  const unsent = new Map<string, number>();
  const keepActive = (itemId: string, until = clock.now() + ACTIVE_GRACE_MS) => {
    if ((activeUntil.get(itemId) ?? 0) >= until - ACTIVE_SLACK_MS) return;
    if (activeUntil.size > 100_000) activeUntil.clear();
    activeUntil.set(itemId, until);
    // Two commands, not a MULTI: the keys are on different slots of a cluster, and each ZADD GT
    // only ever raises a time, so either landing alone is harmless (a failure sends both again).
    Promise.all([
      redis.zadd(activeItemsKey(prefix), 'GT', until, itemId),
      redis.zadd(changedItemsKey(prefix), 'GT', until - ACTIVE_GRACE_MS + ACTIVE_SLACK_MS, itemId),
    ])
      .catch(() => {
        activeUntil.delete(itemId);
        unsent.set(itemId, Math.max(until, unsent.get(itemId) ?? 0));
      });
  };
  /** Change notices written (itemId → the notice's time): a join behind a closed gate writes one at most per slack. */
  const noticedUntil = new Map<string, number>();
  const noteChange = (itemId: string) => {
    const now = clock.now();
    if ((noticedUntil.get(itemId) ?? -Infinity) > now) return;
    if (noticedUntil.size > 100_000) noticedUntil.clear();
    // A notice a slack ahead covers the changes until then (as keepActive's does).
    noticedUntil.set(itemId, now + ACTIVE_SLACK_MS);
    redis.zadd(changedItemsKey(prefix), 'GT', now + ACTIVE_SLACK_MS, itemId).catch(() => noticedUntil.delete(itemId));
  };
  /** Wakes asked for (itemId → time and when asked), so a loop that sees the same line again asks once per slack. */
  const wakes = new Map<string, { at: number; asked: number }>();
  const wakeAt = (itemId: string, at: number) => {
    const was = wakes.get(itemId);
    if (was?.at === at && clock.now() - was.asked < ACTIVE_SLACK_MS) return;
    if (wakes.size > 100_000) wakes.clear();
    wakes.set(itemId, { at, asked: clock.now() });
    // LT: the earliest wake asked for stays; an early one only makes the item active early.
    redis.zadd(wakeItemsKey(prefix), 'LT', at, itemId).catch(() => wakes.delete(itemId));
  };
  const active = { ids: [] as string[], at: -Infinity, loading: null as Promise<string[]> | null, prunedAt: -Infinity };
  function activeItemIds(): Promise<string[]> | string[] {
    const now = clock.now();
    if (now - active.at < 100) return active.ids;
    active.loading ??= (async () => {
      const key = activeItemsKey(prefix);
      // Sent on this connection before the read below, so the read sees them (or they fail again).
      const again = [...unsent];
      unsent.clear();
      for (const [id, until] of again) keepActive(id, until);
      // Lines whose wake came (a window's end, a draw) are made active, by whichever daemon reads first.
      const due = await redis.zrangebyscore(wakeItemsKey(prefix), '-inf', now);
      if (due.length) {
        await redis.zadd(key, 'GT', ...due.flatMap((id) => [now + ACTIVE_GRACE_MS, id]));
        await redis.zrem(wakeItemsKey(prefix), ...due);
        for (const id of due) wakes.delete(id);
      }
      if (now - active.prunedAt > 60_000) {
        active.prunedAt = now;
        await redis.zremrangebyscore(key, '-inf', now - 3_600_000);
      }
      active.ids = await redis.zrangebyscore(key, now, '+inf');
      active.at = now;
      // What this daemon wrote and the set no longer holds: Redis lost it (flushed, restarted from
      // an older AOF, keys deleted) with no reconnect seen here, and the restore was another
      // process's (`reconcile`, another daemon), so activateAll never ran here. Believed, the copy
      // skipped the item's ZADD for up to a minute, and no loop visited a line with tickets in it.
      // Forgotten, the next keepActive writes it again (one that raced this read only writes twice).
      if (activeUntil.size) {
        const listed = new Set(active.ids);
        for (const [id, until] of activeUntil) if (until > now && !listed.has(id)) activeUntil.delete(id);
      }
      return active.ids;
    })().finally(() => (active.loading = null));
    return active.loading;
  }

  /** The change notices read so far (itemId → latest change time), and views read before `trustFrom` are not trusted. */
  const changed = new Map<string, number>();
  const changes = { readFrom: -Infinity, at: -Infinity, trustFrom: -Infinity, loading: null as Promise<void> | null };
  /** Notices are read back this far before the last read began: writers' clocks and round trips differ. */
  const NOTICE_MARGIN_MS = 5_000;
  function readChanges(): Promise<void> | void {
    const now = clock.now();
    if (now - changes.at < 100) return;
    return (changes.loading ??= (async () => {
      const from = changes.readFrom === -Infinity ? '-inf' : changes.readFrom - NOTICE_MARGIN_MS;
      const rows = await redis.zrangebyscore(changedItemsKey(prefix), from, '+inf', 'WITHSCORES');
      for (let i = 0; i < rows.length; i += 2) changed.set(rows[i], Math.max(Number(rows[i + 1]), changed.get(rows[i]) ?? -Infinity));
      changes.readFrom = now;
      changes.at = now;
    })().finally(() => (changes.loading = null)));
  }
  /**
   * The announcements alone (itemId → when: definitions, restocks, reopenings; stamped
   * NOTICE_AHEAD_MS ahead, the loops' notices ACTIVE_SLACK_MS), read only where a caller must not
   * miss one made before it asked.
   */
  const announced = new Map<string, number>();
  let announcedFrom = -Infinity;
  const announcedRead = sharedRead(async () => {
    const now = clock.now();
    const from = announcedFrom === -Infinity ? '-inf' : announcedFrom - NOTICE_MARGIN_MS;
    const rows = await redis.zrangebyscore(announcedItemsKey(prefix), from, '+inf', 'WITHSCORES');
    for (let i = 0; i < rows.length; i += 2) announced.set(rows[i], Math.max(Number(rows[i + 1]), announced.get(rows[i]) ?? -Infinity));
    announcedFrom = now;
  });
  const trusted = (itemId: string) => {
    const v = cache.peek(itemId);
    if (!v) return null;
    const at = v.snap.loadedAt;
    return at > changes.trustFrom && at > (changed.get(itemId) ?? -Infinity) ? v : null;
  };

  return {
    item: async (itemId, opts) => {
      if (opts?.fresh) cache.invalidate(itemId);
      return cache.get(itemId);
    },
    peek: (itemId) => cache.peek(itemId),
    invalidate: (itemId) => cache.invalidate(itemId),
    forget(keep) {
      cache.forget(keep);
      for (const m of [changed, announced]) for (const itemId of m.keys()) if (!keep(itemId)) m.delete(itemId);
    },
    must: async (itemId) => (await cache.get(itemId)) ?? fail('item_not_found', 'No such item.'),
    itemIds: async (opts) => [...(await (opts?.fresh ? knownRead.after(clock.now()) : knownIds()))],
    itemIdSet: async () => knownIds(),
    activeItemIds: async () => activeItemIds(),
    keepActive,
    keepAsNeeded(snap, opts) {
      const id = snap.def.itemId;
      const need = loopNeed(snap, clock.now(), opts?.joining);
      if (need === true) return keepActive(id);
      // A join changed what the views show (keepActive would have noted it).
      if (opts?.joining) noteChange(id);
      if (need !== false) wakeAt(id, need);
    },
    async activateAll() {
      const until = clock.now() + ACTIVATE_ALL_MS;
      changes.trustFrom = clock.now();
      // Nor the copy of the item set: a Redis that restarted from an older AOF can show an older
      // version, counted up again to the one this copy was read at while the set differs.
      known.ver = null;
      known.checkedAt = -Infinity;
      activeUntil.clear();
      active.at = -Infinity;
      const ids = [...(await knownIds())];
      for (let i = 0; i < ids.length; i += 1000) {
        const chunk = ids.slice(i, i + 1000);
        await redis.zadd(activeItemsKey(prefix), 'GT', ...chunk.flatMap((id) => [until, id]));
      }
    },
    async announce(itemId) {
      cache.invalidate(itemId);
      const at = clock.now() + NOTICE_AHEAD_MS;
      await Promise.all([redis.zadd(changedItemsKey(prefix), 'GT', at, itemId), redis.zadd(announcedItemsKey(prefix), 'GT', at, itemId)]);
    },
    async heldViews() {
      await readChanges();
      return trusted;
    },
    async unannouncedNow(itemId) {
      await announcedRead.after(performance.now());
      const v = cache.peek(itemId);
      return v && v.snap.loadedAt > changes.trustFrom && v.snap.loadedAt > (announced.get(itemId) ?? -Infinity) ? v : null;
    },
    async allViews() {
      const [ids] = await Promise.all([knownIds(), readChanges()]);
      const views = [...ids].sort().map((id) => trusted(id) ?? id);
      const unread = views.filter((v): v is string => typeof v === 'string');
      const read = new Map<string, CachedItem | null>();
      for (let i = 0; i < unread.length; i += 200) {
        const slice = unread.slice(i, i + 200);
        (await Promise.all(slice.map((id) => this.item(id)))).forEach((v, k) => read.set(slice[k], v));
      }
      return views.flatMap((v) => (typeof v === 'string' ? (read.get(v) ?? []) : [v]));
    },
    async isKnown(itemId) {
      if ((await knownIds()).has(itemId)) return true;
      return (await knownRead.after(performance.now())).has(itemId);
    },
    listed: async (itemId) => (await redis.sismember(itemsSetKey(prefix), itemId)) === 1,
    async added(itemId) {
      // The set changes first and the version after, in two commands (one MULTI cannot span a
      // cluster's slots): a daemon that sees the new version reloads a set that has the item.
      await redis.sadd(itemsSetKey(prefix), itemId);
      const ver = await bumpVersion();
      known.ids.add(itemId);
      // No other daemon moved the version since this copy was read: it is the set, plus this item.
      if (known.ver !== null && Number(known.ver) === ver - 1) known.ver = String(ver);
      cache.invalidate(itemId);
    },
    async removed(itemId) {
      // As in added(): the version moves last (the keys are on different slots of a cluster).
      await Promise.all([redis.srem(itemsSetKey(prefix), itemId), redis.zrem(changedItemsKey(prefix), itemId), redis.zrem(announcedItemsKey(prefix), itemId), redis.zrem(activeItemsKey(prefix), itemId), redis.zrem(wakeItemsKey(prefix), itemId)]);
      await bumpVersion();
      known.ids.delete(itemId);
    },
  };
}
