import type { Clock } from '../kernel/clock.js';
import { itemKeys } from '../redis/keys.js';
import type { RedisLike } from '../redis/client.js';

/**
 * A call to an item's downstream whose outcome is unknown: it went out (or may have) and no
 * answer said what became of it — a timeout, a reset connection, a 5xx, a 409 "still being
 * processed". The downstream may have made the order. Kept per item and user (`{item}:unsure`)
 * until a call under its key gets an answer that says what happened, so the user's next ticket
 * repeats this call — the same Idempotency-Key and body — instead of making a second order under
 * a new key: the downstream answers what it did with the first, or does it now.
 */
export interface UnsureCall {
  /** The Idempotency-Key it went out under (the first ticket's ref). */
  key: string;
  /** The body it carried, byte for byte (an idempotent service may compare bodies under a key). */
  body: string;
  /** When it was kept (clock ms). */
  at: number;
}

/** How long an unsure call is repeated for the user's next tickets: a day, as long as downstreams keep idempotency keys (Stripe: 24 h). */
export const UNSURE_CALL_TTL_MS = 24 * 3600_000;

/** One item's unsure calls, per user (HandlerContext.unsure). */
export interface UnsureCalls {
  /** The user's unsure call on this item, if one was kept in the last UNSURE_CALL_TTL_MS. */
  read(userId: string): Promise<UnsureCall | null>;
  /** Keeps a call whose outcome is unknown (a call the user already has kept stays: it is older). */
  keep(userId: string, call: Omit<UnsureCall, 'at'>): Promise<void>;
  /** Forgets the user's unsure call: a call under its key got an answer that says what happened. */
  forget(userId: string): Promise<void>;
}

export function createUnsureCalls(deps: { redis: RedisLike; prefix: string; clock: Clock }) {
  const key = (itemId: string) => itemKeys(deps.prefix, itemId).unsure;
  return (itemId: string): UnsureCalls => ({
    async read(userId) {
      const raw = await deps.redis.hget(key(itemId), userId);
      if (raw === null) return null;
      const call = parse(raw);
      if (call && deps.clock.now() - call.at < UNSURE_CALL_TTL_MS) return call;
      // Too old (or unreadable): forgotten, so a new unsure call can be kept.
      await deps.redis.hdel(key(itemId), userId);
      return null;
    },
    async keep(userId, call) {
      await deps.redis.hsetnx(key(itemId), userId, JSON.stringify({ ...call, at: deps.clock.now() }));
    },
    async forget(userId) {
      await deps.redis.hdel(key(itemId), userId);
    },
  });
}

function parse(raw: string): UnsureCall | null {
  try {
    const v = JSON.parse(raw) as Partial<UnsureCall>;
    return typeof v.key === 'string' && typeof v.body === 'string' && typeof v.at === 'number' ? (v as UnsureCall) : null;
  } catch {
    return null;
  }
}
