import type { RedisLike } from '../redis/client.js';
import type { Clock } from '../kernel/clock.js';
import { fail, FloodgateError } from '../kernel/errors.js';
import { itemKeys } from '../redis/keys.js';
import type { CachedItem } from './item-cache.js';
import type { ItemDirectory } from './items.js';
import type { EtaMemory } from './eta-memory.js';
import { cancelResult, endedRefusal, memoryFullRefusal, notOpen, type LineScripts } from './line-scripts.js';
import { createEndedUsers } from './ended-users.js';
import { splitOf, type SplitLine } from './split-line.js';
import type { TicketReader } from './ticket-reader.js';
import { makeTicketId, parseTicketId } from './ticket-id.js';
import { ticketRef } from '../kernel/ticket-ref.js';
import { recentMap } from '../kernel/recent-map.js';
import { createTouchBuffer } from './touches.js';
import type { Outcome, TicketView } from './types.js';
import { baseView, bindingOf, cachedRecord, linePosition, parseRecord, preQueueHints, waitingHints } from './views.js';
import { whenUnheld } from '../redis/reconnect-fence.js';

/** Joining the line and reading a ticket: what users do. */
export interface Tickets {
  /** `source`: the name of the key that asks (recorded on a new ticket, and what perKey quotas count). */
  join(itemId: string, userId: string, payload: Record<string, unknown> | null, source?: string): Promise<{ created: boolean; ticket: TicketView }>;
  /**
   * What a join would be refused for whoever asks, from the cached item view alone: no such item,
   * not open yet. Lets a flood of joins be turned away before their bodies are read.
   */
  precheckJoin(itemId: string): Promise<void>;
  status(ticketId: string): Promise<TicketView>;
  /**
   * status() where it needs neither Redis nor an await: a waiting ticket polled again, its id
   * verified when it was stored, its item's view younger than the cache time. Null otherwise.
   */
  statusNow(ticketId: string): TicketView | null;
  /**
   * A ticket's view from this process's cached item view alone, however old it is (no Redis, no
   * HMAC): a waiting ticket still in the line, or one the item's last cut ended while it waited.
   * Null where the cache cannot tell (admitted, settled, returned to the head, never seen waiting
   * here): then status() reads Redis. What lets one item refresh serve every watcher of the item.
   */
  cachedView(ticketId: string): TicketView | null;
  /** The item a ticket id names, from the id alone (null if it is not one of ours in shape). */
  itemIdOf(ticketId: string): string | null;
  /** The name of the key that created the ticket (null if none was recorded). */
  sourceOf(ticketId: string): Promise<string | null>;
  cancel(ticketId: string): Promise<TicketView>;
  /**
   * A sign of life from the holder of a waiting ticket other than a poll (its event stream, open):
   * puts off the ticket's abandonment as a poll does. No Redis call, nothing for a ticket this
   * process has not read waiting.
   */
  seen(ticketId: string): void;
  /** Writes buffered poll times (abandonment) to Redis. */
  flush(): Promise<void>;
  /**
   * After Redis was out of reach: abandonment counts again from now on the items with it that this
   * process holds a view of (their meta `abandonSince`, raised only). Polls answered 503 meanwhile
   * recorded nothing, and the next admission expired up to a thousand head tickets a call whose
   * holders had polled all along.
   */
  restartIdleClocks(): Promise<void>;
  /**
   * After Redis was out of reach: the waiting tickets' records this process kept are read again.
   * A Redis that came back from older data (a rollback) may have lost a ticket whose join no view
   * of its item had seen — the item's counters read as before it, so nothing told of the rollback —
   * and once another user's join took its seq, the lost ticket's poll was answered from its kept
   * record: `waiting`, with the other's place, until the line reached it.
   */
  forgetRecords(): void;
}

export interface TicketsDeps {
  redis: RedisLike;
  prefix: string;
  clock: Clock;
  cacheMs: number;
  items: ItemDirectory;
  scripts: LineScripts;
  /** A split item's sub-lines (lines > 1). */
  split: SplitLine;
  reader: TicketReader;
  eta: EtaMemory;
  /** Joins per second per key name on items without a perKey quota (FLOODGATE_DEFAULT_KEY_QUOTA). */
  defaultKeyQuota?: number;
  /** Whether Redis is near its memory limit: no new tickets (queue/memory-guard.ts). */
  memoryFull?(): boolean;
  /** Called after a new ticket joined through this process (wakes the dispatcher). */
  onJoined?(itemId: string): void;
  /** Whether admissions want the ETAs told (someone listens to onWaited). */
  rememberEtas: boolean;
  /** A background read failed (an ended item's users: its joins ask Redis meanwhile). */
  onError?(err: unknown): void;
  /** Whether Postgres holds the ticket's (by ref) order as released and returned (LineDeps.saleReleased). */
  saleReleased?(itemId: string, ref: string, userId: string): Promise<boolean>;
  /** Begins the item's due pre-queue draw (admissions.drawBegun: its size kept in Postgres first); a join at the opening waits until its N is fixed. */
  drawNow?(itemId: string, dueAt: number): Promise<unknown>;
  /** The hold after a Redis reconnect, which a join's and a cancel's scripts wait for as they are sent (redis/reconnect-fence.ts whenUnheld). */
  hold?(): Promise<unknown> | null;
}

/** A join at the opening whose pre-queue cannot be drawn now (Postgres cannot keep its size). */
const drawPendingRefusal = () => new FloodgateError('unavailable', 'The line opens once its pre-queue is drawn; try again shortly.', undefined, 2);

/**
 * A refusal that holds for every user, answered from the cache: the sale has not opened. (A full
 * line is decided by the join script, which first returns the ticket a user already holds.)
 */
/**
 * Whether the cached view already told what the join script refused for (the item is sold out,
 * closed or full, and the view says so): then the view is not stale and is not read again. Invalidating on
 * every such refusal made each join to a sold-out item a refresh as well (~7,000 a second after a
 * sale of 200 items, against ~800 while it ran).
 */
function foreseen(s: CachedItem['snap'], err: FloodgateError, now: number): boolean {
  if (err.code === 'sold_out') return s.soldOut;
  if (err.code === 'closed') return s.closed || (s.def.closesAt !== null && now >= s.def.closesAt);
  if (err.code === 'queue_full') return s.def.capacity !== null && s.counts.waiting + s.counts.admitted >= s.def.capacity;
  return false;
}

function refuseFromCache(s: CachedItem['snap'], now: number) {
  // Not while the line holds tickets someone may join again for (opensAt moved later since): a
  // holder's repeat join is answered their ticket (200), which the join script finds first;
  // refused here, it read `425` while the ticket it held read `waiting`. (Not for every line that
  // ever had a ticket either: early joins to a reused item would all reach the script, and count
  // against their quotas before its `not_open`.)
  const held = s.counts.waiting + s.counts.admitted + (s.def.rejoin === 'any' ? 0 : s.counts.succeeded);
  if (s.def.opensAt !== null && now < s.def.opensAt - (s.def.preQueueFromMs ?? 0) && held === 0)
    throw notOpen(s.def.opensAt, now, s.def.preQueueFromMs ? s.def.opensAt - s.def.preQueueFromMs : null);
}

export function createTickets(deps: TicketsDeps): Tickets {
  const { items, reader, clock, prefix } = deps;
  const { records } = reader;
  const touches = createTouchBuffer(deps.redis, prefix);
  const ended = createEndedUsers({ redis: deps.redis, prefix, now: () => clock.now(), onError: deps.onError });
  /** When a succeeded ticket's order was last found live (releasedSince): a winner's repeat joins ask Postgres at most once a second. */
  const liveAt = recentMap<string, number>(20_000);

  /**
   * Whether the ticket (succeeded, on an item that sells by reservation) names an order Postgres has
   * released while Redis still holds the ticket as its user's: the release clears that (return-unit-3.lua),
   * but a Redis rollback past it left the user answered this ticket — its order unpayable — at
   * every join, for good (the order is marked returned, so no sweep runs that step again).
   * Unread (Postgres away or slow): no.
   */
  async function releasedSince(item: CachedItem, ticketId: string, userId: string): Promise<boolean> {
    const s = item.snap;
    if (!deps.saleReleased || s.def.config.reserveMs === undefined) return false;
    const seen = liveAt.get(ticketId);
    if (seen !== undefined && clock.now() - seen < 1000) return false;
    const released = await deps.saleReleased(s.def.itemId, ticketRef(ticketId), userId).catch(() => false);
    if (!released) liveAt.set(ticketId, clock.now());
    return released;
  }

  /** A join to a split item's sub-line: its position is n − A (A from the item view: never lower than a later poll's). */
  async function joinSplit(item: CachedItem, sub: { itemId: string; lines: number }, userId: string, payload: Record<string, unknown> | null, source: string | undefined, rejoined = false): Promise<{ created: boolean; ticket: TicketView }> {
    const s = item.snap;
    const j = await whenUnheld(deps.hold, () => deps.split.join(sub, userId, payload, source, deps.defaultKeyQuota, rejoined)).catch((err: unknown) => {
      // A refusal (closed, sold out) the view did not foresee says it is old.
      if (!(err instanceof FloodgateError && foreseen(s, err, clock.now()))) items.invalidate(sub.itemId);
      throw err;
    });
    const rec = parseRecord(j.record, s.epoch);
    const ticketId = makeTicketId(sub.itemId, j.seq, s.secret, bindingOf(rec, s.epoch));
    if (!j.created) {
      // Brought back by a Redis rollback past an end other than a success, as on one line (joinOnce).
      const end = rec.state === 'waiting' && !rejoined ? await reader.endAfterRollback(ticketId, item) : null;
      if (end && end.state !== 'succeeded') {
        await deps.split.cancel(sub, j.seq, JSON.stringify(end.outcome ?? { status: 'cancelled', reason: 'cancelled_by_user' }), j.record.slice(1)).catch(() => null);
        return joinSplit(item, sub, userId, payload, source, true);
      }
      return { created: false, ticket: end ?? (await reader.read(ticketId, item, j.seq)) };
    }
    deps.onJoined?.(sub.itemId);
    const position = Math.max(1, j.num - s.admittedUpTo) + s.returned;
    const hints = waitingHints(item, position, clock.now());
    // (As on one line: the ETA told at the join, against the wait it had — floodgate_eta_error's samples.)
    if (deps.rememberEtas) deps.eta.remember(sub.itemId, j.seq, hints.etaMs);
    return { created: true, ticket: { ...baseView(ticketId, sub.itemId, cachedRecord(rec, sub.itemId, j.seq, item.recordKey), 'waiting'), position, ...hints } };
  }

  async function cancelSplit(sub: { itemId: string; lines: number }, a: { seq: number; outcome: string; record: string }) {
    return cancelResult(await deps.split.cancel(sub, a.seq, a.outcome, a.record));
  }

  /** A waiting ticket placed from a fresh cached view alone (null where it cannot be); `poll`: counts as a sign of life (abandonment). */
  function placeNow(ticketId: string, poll: boolean): TicketView | null {
    const hit = records.get(ticketId);
    const fresh = hit && items.peek(hit.itemId);
    if (!hit || !fresh || hit.secret !== fresh.recordKey || clock.now() - fresh.snap.loadedAt >= deps.cacheMs) return null;
    const view = reader.cachedWaiting(ticketId, fresh, hit.seq, hit);
    if (poll && view && fresh.snap.def.abandonAfterMs !== null) touches.touch(hit.itemId, hit.seq, clock.now());
    return view;
  }
  const statusNow = (ticketId: string) => placeNow(ticketId, true);

  /**
   * Tickets.join; `rejoined`: the second try, after a ticket a rollback brought back was ended
   * again; `afterDraw`: the try after the draw this join waited for.
   */
  async function joinOnce(itemId: string, userId: string, payload: Record<string, unknown> | null, source: string | undefined, rejoined: boolean, afterDraw = false): Promise<{ created: boolean; ticket: TicketView }> {
    const item = await items.must(itemId);
    const s = item.snap;
    // Behind a closed gate the join needs no loop (only a change notice): the gate's opening
    // makes the item active (items.loopNeed). A join to an ended item creates nothing: it marks
    // nothing (a flood of refusals kept ended items active and their views distrusted).
    if (!(s.soldOut || s.closed)) items.keepAsNeeded(s, { joining: true });
    const now = clock.now();
    refuseFromCache(s, now);
    // After a sell-out or close, a user who holds nothing of the item is refused from memory —
    // once the announcements, read after this join arrived, show none since this view was read:
    // only an announced change (a redefinition, restock or reopening, on any daemon; announced
    // before it is answered) makes an ended item take users again.
    if (ended.refusable(item, userId) && (await items.unannouncedNow(itemId)) === item) throw endedRefusal(s.closed);
    const sub = splitOf(s.def);
    const memoryFull = deps.memoryFull?.() ?? false;
    if (sub) {
      // (A split item's join takes its number first: near the limit, every join of one is refused.)
      if (memoryFull) throw memoryFullRefusal();
      return joinSplit(item, sub, userId, payload, source);
    }
    const r = await whenUnheld(deps.hold, (waited) => deps.scripts.join(itemId, waited ? clock.now() : now, { userId, payload: payload ? JSON.stringify(payload) : '', source: source ?? '', defaultKeyQuota: deps.defaultKeyQuota ?? '', memoryFull: memoryFull ? '1' : '', uncounted: rejoined || afterDraw ? '1' : '' }));
    // At the opening, before the pre-queue's draw began: the draw's first step (one draw per item
    // however many joins wait on it; its size goes to Postgres before anything of it is shown),
    // then the join again, past the draw's N (not waiting for the whole order to be written: a
    // million tickets' draw takes about half a second). A draw that cannot be made now (Postgres
    // away) is a 503: no join is taken inside a draw whose size is not known. (Its quotas were
    // counted by the first call.)
    if (r.kind === 'drawPending') {
      if (!deps.drawNow || afterDraw) throw drawPendingRefusal();
      // (Its own draw failed: once more all the same, as another daemon's may have fixed N since —
      // a review: behind a slow Postgres, one daemon's joins all answered 503 while the other's
      // draw had begun a second before.)
      await deps.drawNow(itemId, s.def.opensAt ?? 0).catch(() => undefined);
      return joinOnce(itemId, userId, payload, source, rejoined, true);
    }
    if (r.kind === 'refused') {
      if (r.itemChanged && !foreseen(s, r.error, now)) items.invalidate(itemId);
      throw r.error;
    }
    const { seq, record, served } = r;
    const rec = parseRecord(record, s.epoch);
    const ticketId = makeTicketId(itemId, seq, s.secret, bindingOf(rec, s.epoch));
    // The ticket the user holds: while it waits, placed from the cached view as its poll is (no read).
    // (A join is not a poll: it does not put off the ticket's abandonment.)
    if (r.kind === 'existing') {
      // A ticket a Redis rollback brought back whose end the ledger holds, other than a success
      // (its user was told `cancelled`, `expired`, `rejected` or `failed`, and joins again): ended
      // again now with that end, and the join makes a new ticket, as the join rules allow after any
      // of them. Returned as it was, it waited through the line to end at the head, holding a place
      // under the item's capacity (a stranger read `queue_full` beside it), and the user's join
      // answered it for as long.
      const end = rec.state === 'waiting' && !rejoined ? await reader.endAfterRollback(ticketId, item) : null;
      if (end && end.state !== 'succeeded') {
        await deps.scripts.cancel(itemId, clock.now(), { seq, outcome: JSON.stringify(end.outcome ?? { status: 'cancelled', reason: 'cancelled_by_user' }), record: record.slice(1) }).catch(() => null);
        // Over a quota, the join that would make the new ticket is refused, as any would be (it
        // went around the quota: the second call counts none). The old ticket is ended all the same.
        if (r.overQuota) throw r.overQuota;
        return joinOnce(itemId, userId, payload, source, true);
      }
      // A winner whose order was released (they may join again, as its release said): a new ticket.
      if (rec.state === 'succeeded' && !rejoined && (await releasedSince(item, ticketId, userId))) {
        await deps.scripts.forgetUser(itemId, clock.now(), { userId, seq });
        // (Over a quota: refused, as the join would be without the rollback; the second call counts none.)
        if (r.overQuota) throw r.overQuota;
        return joinOnce(itemId, userId, payload, source, true);
      }
      return { created: false, ticket: end ?? (rec.state === 'waiting' ? placeNow(ticketId, false) : null) ?? (await reader.read(ticketId, item, seq)) };
    }
    const cached = cachedRecord(rec, itemId, seq, item.recordKey);
    records.set(ticketId, cached);
    deps.onJoined?.(itemId);
    const base = baseView(ticketId, itemId, cached, 'waiting');
    // (By the time its record was stamped with: a join the script took as one at the opening, past
    // the fixed pre-queue, is placed, though this daemon's clock read a moment before it.)
    if (s.draw && rec.createdAt < (s.def.opensAt ?? 0)) return { created: true, ticket: { ...base, ...preQueueHints(item, now) } };
    // From the view's head, as the polls that follow place it (ticket-reader.ts read).
    const position = linePosition(item, Math.min(served, s.served), seq);
    const hints = waitingHints(item, position, now);
    if (deps.rememberEtas) deps.eta.remember(itemId, seq, hints.etaMs);
    return { created: true, ticket: { ...base, position, ...hints } };
  }

  return {
    statusNow,

    async precheckJoin(itemId) {
      refuseFromCache((await items.must(itemId)).snap, clock.now());
    },

    join: (itemId, userId, payload, source) => joinOnce(itemId, userId, payload, source, false),

    async status(ticketId) {
      const now = statusNow(ticketId);
      if (now) return now;
      try {
        const { item, seq } = await reader.resolve(ticketId);
        const known = records.get(ticketId);
        const view = (known?.secret === item.recordKey ? reader.cachedWaiting(ticketId, item, seq, known) : null) ?? (await reader.read(ticketId, item, seq));
        // A sign of its holder's life once the id is known to be this ticket's (its binding half
        // matched): resolve checks the seq half alone, and the poll of an id a rollback or a new life
        // of the item left without its ticket kept the ticket now at that seq from being expired.
        if (item.snap.def.abandonAfterMs !== null) touches.touch(item.snap.def.itemId, seq, clock.now());
        return view;
      } catch (err) {
        // Not in Redis (lost, rolled back, removed by retention): Postgres's outcome, if it has one.
        return (await reader.fromPostgres(ticketId, err)).view;
      }
    },

    async sourceOf(ticketId) {
      try {
        const { item, seq } = await reader.resolve(ticketId);
        const sub = splitOf(item.snap.def);
        // The id's own ticket only: after a rollback or a loss its seq may be another ticket's.
        reader.bound(ticketId, item, sub ? await deps.split.recordOf(sub, seq) : await deps.redis.hget(itemKeys(prefix, item.snap.def.itemId).page(seq), String(seq)));
        return sub ? deps.split.sourceOf(sub, seq) : deps.redis.hget(itemKeys(prefix, item.snap.def.itemId).sourcePage(seq), String(seq));
      } catch (err) {
        return (await reader.fromPostgres(ticketId, err)).source;
      }
    },

    cachedView(ticketId) {
      const hit = records.get(ticketId);
      const item = hit && items.peek(hit.itemId);
      if (!hit || !item || item.recordKey !== hit.secret) return null;
      return reader.cachedWaiting(ticketId, item, hit.seq, hit) ?? reader.cachedCut(ticketId, item, hit);
    },

    itemIdOf: (ticketId) => parseTicketId(ticketId)?.itemId ?? null,

    async cancel(ticketId) {
      let resolved: Awaited<ReturnType<typeof reader.resolve>> & { record: string | null };
      try {
        const r = await reader.resolve(ticketId);
        const sub = splitOf(r.item.snap.def);
        const record = sub ? await deps.split.recordOf(sub, r.seq) : await deps.redis.hget(itemKeys(prefix, r.item.snap.def.itemId).page(r.seq), String(r.seq));
        reader.bound(ticketId, r.item, record);
        resolved = { ...r, record };
      } catch (err) {
        // A ticket Redis lost whose end Postgres holds: ended, so not cancellable (or cancelled already).
        const { view } = await reader.fromPostgres(ticketId, err);
        if (view.state === 'cancelled') return view;
        fail('not_cancellable', 'Only a waiting ticket can be cancelled.');
      }
      const { item, seq, record } = resolved!;
      const itemId = item.snap.def.itemId;
      // Waiting in Redis, but ended before a Redis rollback took its end back (the ledger holds its
      // order or its outcome, and its user was told it): not cancellable, as when Redis lost it. (A
      // ledger that cannot be read says nothing: the cancel goes on.)
      if (record!.startsWith('w') && reader.heldEnd) {
        const held = await reader.heldEnd(ticketId, item).catch(() => null);
        if (held && held.state !== 'cancelled') fail('not_cancellable', 'Only a waiting ticket can be cancelled.');
      }
      items.keepActive(itemId);
      // Cancel only the ticket this id was made for: the script checks the record is the one verified.
      const sub = splitOf(item.snap.def);
      const outcome: Outcome = { status: 'cancelled', reason: 'cancelled_by_user' };
      const a = { seq, outcome: JSON.stringify(outcome), record: record!.slice(1) };
      // (Sent once no reconnect's hold is up: the reads above — a ledger read among them — may span
      // a reconnect, and a cancel on a Redis rolled back past a close told its user `cancelled`
      // after `closed`.)
      const done = await whenUnheld(deps.hold, () => (sub ? cancelSplit(sub, a) : deps.scripts.cancel(itemId, clock.now(), a)));
      if (done !== 'cancelled') {
        // Cancelling a cancelled ticket again (a client retrying after a lost answer) is no error.
        // (One back at the head after a run whose effect is not known waits: nothing to read.)
        const view = done === 'not_waiting' ? await reader.read(ticketId, item, seq) : null;
        if (view?.state === 'cancelled') return view;
        // The cached view (up to FLOODGATE_CACHE_MS old) may still place the ticket in the line:
        // the poll that follows the refusal (the waiting page's, to show why) must not say it waits.
        items.invalidate(itemId);
        // Back at the head after a run whose effect is not known (its lease ran out): it reads
        // `waiting`, so "only a waiting ticket" named the wrong reason.
        if (done === 'ran_before') fail('not_cancellable', 'This ticket ran before and what that run did is not known yet; it cannot be cancelled until it ends.');
        fail('not_cancellable', 'Only a waiting ticket can be cancelled.');
      }
      item.cancelled.add(seq);
      item.ownCancels.add(seq);
      // Its polls read Redis from now on, not the cached view, as an admitted ticket's do: a view
      // refreshed from a snapshot read just before this cancel drops it from `cancelled` until the
      // next refresh (item-cache.ts: this process's own cancels are left to the stream to confirm),
      // and the poll that follows the leave read `waiting` (CI's browser-wait, once).
      records.delete(ticketId);
      return reader.read(ticketId, item, seq);
    },

    seen(ticketId) {
      const hit = records.get(ticketId);
      const item = hit && items.peek(hit.itemId);
      if (hit && item && item.recordKey === hit.secret && item.snap.def.abandonAfterMs !== null) touches.touch(hit.itemId, hit.seq, clock.now());
    },

    flush: () => touches.flush(),

    forgetRecords: () => records.clear(),

    async restartIdleClocks() {
      const now = clock.now();
      const withAbandon = (await items.itemIds()).filter((id) => (items.peek(id)?.snap.def.abandonAfterMs ?? null) !== null);
      await Promise.all(
        withAbandon.map(async (itemId) => {
          const meta = itemKeys(prefix, itemId).meta;
          const [handler, since] = await deps.redis.hmget(meta, 'handler', 'abandonSince');
          // (Not on an item Redis lost: a meta made of this field alone is no item; the restore makes it.)
          if (handler !== null && Number(since ?? 0) < now) await deps.redis.hset(meta, 'abandonSince', String(now));
        }),
      );
    },
  };
}
