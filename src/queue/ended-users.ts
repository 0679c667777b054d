import type { RedisLike } from '../redis/client.js';
import { itemKeys } from '../redis/keys.js';
import type { CachedItem } from './item-cache.js';
import { splitOf } from './split-line.js';

type Snap = CachedItem['snap'];

/** How many users of ended items a daemon holds at most, over all of them (the least recently asked items are let go first; an item with more than this asks Redis as before). */
const MAX_USERS = 1_000_000;
/** How many ended items a daemon holds at once (a sale event has thousands of items: all of them). */
const MAX_ITEMS = 20_000;
const SCAN_COUNT = 2000;

/**
 * Whether a user whose latest ticket is `seq` (undefined: none) holds nothing of the ended item:
 * no ticket, or one the item's last cut ended while it waited — after the tickets served before
 * the cut (those were admitted: a sale may be theirs) and up to the cut's last seq. Such a ticket
 * ended `rejected`/`cancelled`, which lets its user join again, and the ended item refuses that
 * join. With a pre-queue draw, line order is not seq order: only strangers.
 */
function endedFor(s: Snap, seq: number | undefined): boolean {
  if (seq === undefined) return true;
  const cut = s.cuts[s.cuts.length - 1];
  // (A cut that held some of its range in doubt — buyers a Redis rollback had put back in line — leaves that to Redis.)
  return s.draw === null && cut !== undefined && cut[4] !== undefined && !cut[5] && seq > cut[4] && seq <= cut[0];
}

/**
 * The users of an ended item, for refusing the crowd that arrives after a sell-out without a
 * Redis call each. Once an item is sold out or closed (flags the cut sets in Redis; the join
 * script refuses every user it does not know from then on), whoever is not in its `users` hash
 * holds no ticket of it, nor does a user whose latest ticket the last cut ended while it waited
 * (endedFor): such a join's answer is `410` whatever else holds, and this daemon can give it from
 * memory. Any other user may hold a ticket (a sale they won, a ticket in doubt) and the join
 * script answers them, as before.
 *
 * The hash is read (HSCAN, in steps) only after a view that says the item ended, so it holds
 * every user the item will ever know while it stays ended; the copy is kept for that view's
 * incarnation (`epoch`), join counter (`seq`) and generation (a Redis rollback or loss starts a
 * new one): an item sold out again after new stock and new joins has a higher seq and is read
 * again. Until a copy is complete, joins ask Redis. What this
 * skips for a stranger is only what would have refused them in other words: a quota (429) or a
 * block (403) is checked by the script before the sell-out, and from here such a user reads
 * `410` — true, and final.
 */
export function createEndedUsers(deps: { redis: RedisLike; prefix: string; now(): number; onError?(err: unknown): void }) {
  const held = new Map<string, { key: string; users: Map<string, number> | null; failedAt?: number }>();
  let total = 0;

  // recordKey: the view's generation, which a Redis rollback or loss changes (item-cache.ts).
  const keyOf = (item: CachedItem) => `${item.recordKey}:${item.snap.epoch}:${item.snap.seq}`;

  async function load(itemId: string, key: string) {
    const users = new Map<string, number>();
    const hash = itemKeys(deps.prefix, itemId).users;
    let cursor = '0';
    do {
      const [next, flat] = await deps.redis.hscan(hash, cursor, 'COUNT', SCAN_COUNT);
      for (let i = 0; i < flat.length; i += 2) users.set(flat[i], Number(flat[i + 1]));
      if (users.size > MAX_USERS) return; // too many to hold: this item's joins keep asking Redis
      cursor = next;
    } while (cursor !== '0');
    const e = held.get(itemId);
    if (e?.key !== key) return;
    e.users = users;
    total += users.size;
    // Over the budget: let the least recently asked items go (the map's first entries).
    for (const [id, other] of held) {
      if (total <= MAX_USERS || other === e) break;
      drop(id);
    }
  }

  function drop(itemId: string) {
    const e = held.get(itemId);
    if (e?.users) total -= e.users.size;
    held.delete(itemId);
  }

  return {
    /**
     * Whether `userId` surely holds no ticket of this ended item (its view says sold out or
     * closed), so that its join can be refused without asking Redis. False while unsure. The
     * caller also checks that the view is not older than the item's last change notice.
     */
    refusable(item: CachedItem, userId: string): boolean {
      const s = item.snap;
      if (!(s.soldOut || s.closed) || splitOf(s.def)) return false;
      const itemId = s.def.itemId;
      const key = keyOf(item);
      const e = held.get(itemId);
      // A read that failed (Redis away) is tried again a second later, not on every join.
      if (e?.key === key && !(e.failedAt !== undefined && deps.now() - e.failedAt > 1000)) {
        // Most recently asked last, so the first one in the map is the one to let go.
        held.delete(itemId);
        held.set(itemId, e);
        return e.users !== null && endedFor(s, e.users.get(userId));
      }
      drop(itemId);
      held.set(itemId, { key, users: null });
      if (held.size > MAX_ITEMS) drop(held.keys().next().value!);
      load(itemId, key).catch((err: unknown) => {
        const failed = held.get(itemId);
        if (failed?.key === key) failed.failedAt = deps.now();
        deps.onError?.(err);
      });
      return false;
    },
    /** How many items' users are held (for tests). */
    size: () => held.size,
  };
}

export type EndedUsers = ReturnType<typeof createEndedUsers>;
