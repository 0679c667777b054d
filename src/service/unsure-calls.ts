import type { Clock } from '../kernel/clock.js';
import { withTimeout } from '../kernel/wait.js';
import { itemKeys } from '../redis/keys.js';
import type { RedisLike } from '../redis/client.js';

/**
 * A call to an item's downstream whose outcome is unknown: it went out (or may have) and no
 * answer said what became of it — a timeout, a reset connection, a 5xx, a 409 "still being
 * processed". The downstream may have made the order. Kept per item and user (`{item}:unsure`) so
 * that the user's next ticket repeats this call — the same Idempotency-Key and body — instead of
 * making a second order under a new key: the downstream answers what it did with the first, or
 * does it now.
 *
 * One later ticket takes it over (`by`), and its own runs again repeat it too (a settle lost after
 * the answer, a lease run out): forgotten when it was answered, they called under their own key,
 * and the shop made a second order. A ticket after that one calls under its own key once the
 * repetition reached the shop (`reached`: it either got the shop's answer — the first order, or one
 * made then — or ended without one after the shop had it), and a call the shop refuses again and
 * again (its body, say) must not hold every ticket of the user after it. A repetition that never
 * reached it (refused before: connection refused, 429, 503) leaves the call to the next ticket, up
 * to MAX_TAKERS tickets: otherwise the first call's order was made and the next ticket made another.
 */
export interface UnsureCall {
  /** The Idempotency-Key it went out under (the first ticket's ref). */
  key: string;
  /** The body it carried, byte for byte (an idempotent service may compare bodies under a key). */
  body: string;
  /** When it was kept (clock ms). */
  at: number;
  /** The ref of the later ticket that took it over, once one did. */
  by?: string;
  /** The taker's repetition reached the downstream (it heard the call). */
  reached?: boolean;
  /** How many tickets have taken it over. */
  takers?: number;
}

/** Tickets that may take over one unsure call whose repetitions never reach the downstream. */
export const MAX_TAKERS = 3;

/** How long an unsure call is kept: a day, as long as downstreams keep idempotency keys (Stripe: 24 h). */
export const UNSURE_CALL_TTL_MS = 24 * 3600_000;

/** How long a take-over waits for the outcome ledger's word on the call's ticket (then: kept as unsure). */
const END_READ_MS = 2000;

/** Entries each keep() looks at for ones past their day. */
const TRIM_SAMPLE = 16;

/** One item's unsure calls, per user (HandlerContext.unsure). */
export interface UnsureCalls {
  /**
   * The call ticket `ref` must repeat: the user's unsure call if it is `ref`'s own (its key), taken
   * over by `ref` now or before; null when there is none, or another ticket took it over already.
   */
  take(userId: string, ref: string): Promise<UnsureCall | null>;
  /**
   * Keeps a call whose outcome is unknown (a call the user already has kept stays: it is older).
   * `ref`: the ticket whose run made it; a repetition of a call taken over (its key another
   * ticket's) keeps nothing once that call was let go — a late timeout of a superseded run brought
   * it back for the user's next ticket after it had been answered.
   */
  keep(userId: string, call: { key: string; body: string }, ref?: string): Promise<void>;
  /** A call of ticket `ref` under its own key was answered: its unsure call, if kept, is settled. */
  answered(userId: string, ref: string): Promise<void>;
  /** Ticket `ref`'s repetition of the call it took over reached the downstream: no ticket after it takes the call over. */
  reached(userId: string, ref: string): Promise<void>;
}

/**
 * `endOf`: how the ticket whose ref is given ended, as the outcome ledger holds it (null: no row,
 * or unknown). A call kept after its own ticket's call was answered — a run superseded while it
 * waited (its daemon paused past the run lease, another daemon ran the ticket, got the shop's
 * answer and cleared the call), whose drop came after — is no unsure call: taken over, the user's
 * next ticket was told `succeeded` with the first ticket's order, and no second order was made (a
 * review). A call whose ticket ended with the shop's answer to it — `succeeded`, or `rejected` on a
 * 409/422 the shop keeps under the key — is let go instead of taken over (repeated, the shop's
 * stored refusal told the user's next ticket the old no). A ticket the daemon ended on its own
 * (`failed`, a closed item, a cut) keeps its call unsure: that call may have made an order.
 */
export function createUnsureCalls(deps: { redis: RedisLike; prefix: string; clock: Clock; endOf?: (ref: string) => Promise<{ status: string; reason?: string } | null> }) {
  const key = (itemId: string) => itemKeys(deps.prefix, itemId).unsure;
  return (itemId: string): UnsureCalls => {
    const read = async (userId: string) => {
      const raw = await deps.redis.hget(key(itemId), userId);
      if (raw === null) return null;
      const call = parse(raw);
      if (call && deps.clock.now() - call.at < UNSURE_CALL_TTL_MS) return call;
      // Too old (or unreadable): forgotten, so a new unsure call can be kept.
      await deps.redis.hdel(key(itemId), userId);
      return null;
    };
    return {
      async take(userId, ref) {
        const call = await read(userId);
        if (!call || call.key === ref || call.by === ref) return call;
        if (call.by !== undefined && (call.reached || (call.takers ?? 1) >= MAX_TAKERS)) {
          await deps.redis.hdel(key(itemId), userId);
          return null;
        }
        // Asked only of a call no ticket took over yet. (Postgres away: kept as unsure, the safe
        // side — a repeat is never a second order. At most 2 s: a lock on the ledger's table held
        // the run past its deadline.)
        if (call.by === undefined && deps.endOf && settledByShop(await withTimeout(deps.endOf(call.key), END_READ_MS, 'outcome ledger slow').catch(() => null))) {
          await deps.redis.hdel(key(itemId), userId);
          return null;
        }
        const taken = { ...call, by: ref, takers: (call.takers ?? 0) + 1 };
        await deps.redis.hset(key(itemId), userId, JSON.stringify(taken));
        return taken;
      },
      async keep(userId, call, ref) {
        if (ref !== undefined && call.key !== ref) return; // taken over: kept while it is, never made again
        const k = key(itemId);
        await deps.redis.hsetnx(k, userId, JSON.stringify({ ...call, at: deps.clock.now() }));
        // The hash outlives its last entry by the TTL at most (users who never come back)…
        await deps.redis.pexpire(k, UNSURE_CALL_TTL_MS);
        // …but each keep pushes that on: on an item that keeps having unsure calls, entries of
        // users who never came back stayed for good, each with its call's body. A few entries,
        // drawn at random, are looked at with each keep and dropped when past their day.
        const drawn = (await deps.redis.hrandfield(k, TRIM_SAMPLE, 'WITHVALUES')) as string[];
        const stale = [];
        for (let i = 0; i < drawn.length; i += 2) {
          const c = parse(drawn[i + 1]);
          if (!c || deps.clock.now() - c.at >= UNSURE_CALL_TTL_MS) stale.push(drawn[i]);
        }
        if (stale.length) await deps.redis.hdel(k, ...stale);
      },
      async answered(userId, ref) {
        const call = await read(userId);
        if (call?.key === ref) await deps.redis.hdel(key(itemId), userId);
      },
      async reached(userId, ref) {
        const call = await read(userId);
        if (call?.by === ref && !call.reached) await deps.redis.hset(key(itemId), userId, JSON.stringify({ ...call, reached: true }));
      },
    };
  };
}

/** Whether a ticket's end is the shop's answer to its call (webhook.ts: 2xx → succeeded, a stored 409/422 → rejected). */
const settledByShop = (end: { status: string; reason?: string } | null) => end !== null && (end.status === 'succeeded' || (end.status === 'rejected' && (end.reason === 'http_409' || end.reason === 'http_422')));

function parse(raw: string): UnsureCall | null {
  try {
    const v = JSON.parse(raw) as Partial<UnsureCall>;
    return typeof v.key === 'string' && typeof v.body === 'string' && typeof v.at === 'number' && (v.by === undefined || typeof v.by === 'string') && (v.takers === undefined || typeof v.takers === 'number') ? (v as UnsureCall) : null;
  } catch {
    return null;
  }
}
