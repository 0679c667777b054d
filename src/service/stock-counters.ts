import type { RedisLike } from '../redis/client.js';
import type { Clock } from '../kernel/clock.js';
import type { LineItems } from '../queue/items.js';
import { createSplitLine, splitItemOf } from '../queue/split-line.js';
import { itemKeys } from '../redis/keys.js';
import { createScriptRunner, scripts } from '../redis/scripts.js';

/**
 * The Redis stock counters of items that have stock (seckill, coupon): a fast filter in front
 * of Postgres, which decides. Units live in shards (hash fields s0..s<K-1>); a ticket that took
 * a unit is marked in `taken` until it sells or gives the unit back (the line's scripts give it
 * back whenever they end a ticket without a sale or return it to the head).
 */
export interface StockCounters {
  /**
   * Takes one unit for each ticket (idempotent per ticket); `left` is what all shards hold after.
   * `ended`: the ticket is no longer admitted (it ended, or is back in the line), and took nothing.
   */
  take(itemId: string, seqs: number[]): Promise<{ taken: boolean[]; ended: boolean[]; left: number }>;
  /** Gives the ticket's unit back (idempotent); with `upTo`, only while the counter and the units other admitted tickets hold come to fewer (an item not split). */
  refund(itemId: string, seq: number, upTo?: number): Promise<boolean>;
  /** Drops the ticket's unit without giving it back: Postgres said the counter held one too many. */
  forfeit(itemId: string, seq: number): Promise<boolean>;
  /**
   * Gives back the units of released reservations of one item (once per order) and lets their
   * buyers join again, the counter never past `cap` (the units Postgres has left after the
   * releases; none: no bound). Returns how many were given back now (the rest had been already).
   */
  returnReleased(itemId: string, orders: { orderId: string; userId: string }[], cap?: number): Promise<number>;
  /**
   * Sets the units left, over `shards` shards; with `idleOnly`, only while no ticket of the item
   * is admitted (then also forgetting which tickets took units), and with `unless` only if the
   * item's admissions counter and its units left still read what they did when the caller counted
   * `units` (nothing was admitted or given back since). Returns whether it was set.
   */
  set(itemId: string, units: number, shards: number, opts?: { idleOnly?: boolean; unless?: { admissions: number; units: number | null } }): Promise<boolean>;
  /**
   * Before an operator's change of the stock writes Postgres: sell-outs decided on a sale's read
   * are refused until its set (not idleOnly) reaches Redis, or `forMs` from now (cut-8.lua).
   */
  changing(itemId: string, forMs: number): Promise<void>;
  /** The change failed before its set: sell-outs are cut again at once (its mark taken away). */
  changeFailed(itemId: string): Promise<void>;
}

/** `items`: the line's item views, refreshed after a change admission depends on (units back, a new count). */
export function createStockCounters(deps: { redis: RedisLike; prefix: string; clock: Clock; items: Pick<LineItems, 'invalidate' | 'keepActive' | 'item' | 'peek'> }): StockCounters {
  const { run } = createScriptRunner(deps.redis, deps.prefix);
  const now = () => deps.clock.now();
  // A split item (lines > 1) keeps its units on its sub-lines: a ticket's unit is on the ticket's own.
  const split = createSplitLine(deps);
  // The cached view first (splitItemOf): a take is on the sale's hot path.
  const splitItem = (itemId: string) => splitItemOf(deps.items, itemId);
  const refund = async (itemId: string, seq: number, forfeit: boolean, upTo?: number) => {
    const sub = await splitItem(itemId);
    return sub ? split.refundStock(sub, seq, forfeit) : (await run(scripts.refundStock, itemId, now(), { seq, forfeit: forfeit ? '1' : '0', upTo: upTo ?? '' })) === 1;
  };
  return {
    async take(itemId, seqs) {
      const sub = await splitItem(itemId);
      if (sub) return split.takeStock(sub, seqs);
      const [left, ...taken] = (await run(scripts.takeStock, itemId, now(), {}, seqs)) as number[];
      return { taken: taken.map((t) => t === 1), ended: taken.map((t) => t === -1), left };
    },
    refund: (itemId, seq, upTo) => refund(itemId, seq, false, upTo),
    forfeit: (itemId, seq) => refund(itemId, seq, true),
    async returnReleased(itemId, orders, cap) {
      if (!orders.length) return 0;
      const given = (await run(scripts.returnUnit, itemId, now(), { cap: cap ?? '' }, orders.flatMap((o) => [o.orderId, o.userId]))) as number;
      deps.items.invalidate(itemId);
      // Units came back: tickets waiting for them may be admitted, and every daemon's view is old.
      if (given > 0) deps.items.keepActive(itemId);
      return given;
    },
    async changing(itemId, forMs) {
      await deps.redis.hset(itemKeys(deps.prefix, itemId).meta, 'stockPending', String(now() + forMs));
    },
    async changeFailed(itemId) {
      await deps.redis.hdel(itemKeys(deps.prefix, itemId).meta, 'stockPending');
    },
    async set(itemId, units, shards, opts) {
      const sub = await splitItem(itemId);
      if (sub) {
        const item = await deps.items.item(itemId, { fresh: true });
        // Only with no sale in flight (as set-stock-4.lua's idleOnly), over every sub-line's counters,
        // and none since the caller counted (read here, not inside one script: the sub-lines are on
        // other slots, so a sale may still slip between this read and the set).
        if (opts?.idleOnly && (item?.snap.counts.admitted ?? 0) > 0) return false;
        // And the units as the caller read them before its count: an operator's restock since
        // (split.setStock) makes the count old, and setting it took the restock back (then cut
        // the item sold out: every waiting user told so with units on sale).
        if (opts?.unless && (item?.snap.admissions !== opts.unless.admissions || (opts.unless.units !== null && item?.snap.stockLeft !== opts.unless.units))) return false;
        await split.setStock(sub, units);
        deps.items.invalidate(itemId);
        return true;
      }
      const res = (await run(scripts.setStock, itemId, now(), { units, shards, idleOnly: opts?.idleOnly ? '1' : '0', admissions: opts?.unless?.admissions ?? '', unitsWere: opts?.unless?.units ?? '' })) as number;
      deps.items.invalidate(itemId);
      return res >= 0;
    },
  };
}
