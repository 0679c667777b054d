import type { CachedItem } from './item-cache.js';
import type { Cut, Outcome, TicketState, TicketView } from './types.js';

const stateByChar: Record<string, TicketState> = {
  w: 'waiting',
  a: 'admitted',
  s: 'succeeded',
  r: 'rejected',
  f: 'failed',
  c: 'cancelled',
  e: 'expired',
};

/** A ticket record as stored in its page: "<state char><createdAt - epoch>|<userId>". */
export interface TicketRecord {
  state: TicketState;
  createdAt: number;
  userId: string;
}

/** A waiting ticket's immutable part as the poll cache keeps it, under the (verified) ticket id. */
export interface CachedRecord extends TicketRecord {
  itemId: string;
  seq: number;
  createdIso: string;
  /** The item's recordKey when the id was verified: a re-created item (new secret) or a rollback voids the entry. */
  secret: string;
}

export const cachedRecord = (rec: TicketRecord, itemId: string, seq: number, secret: string): CachedRecord => ({
  ...rec,
  itemId,
  seq,
  createdIso: iso(rec.createdAt),
  secret,
});

export function parseRecord(record: string, epoch: number): TicketRecord {
  const bar = record.indexOf('|');
  return {
    state: stateByChar[record[0]],
    createdAt: epoch + Number(record.slice(1, bar)),
    userId: record.slice(bar + 1),
  };
}

/** What a ticket id's binding half covers (ticket-id.ts), from the record. */
export const bindingOf = (rec: TicketRecord, epoch: number) => ({ joinedRel: rec.createdAt - epoch, userId: rec.userId });

export const stateOfChar = (c: string): TicketState => stateByChar[c];

const iso = (ms: number) => new Date(ms).toISOString();

/** Why a waiting ticket is not moving, when the daemon knows it. */
export type WaitReason = 'not_open' | 'paused' | 'awaiting_returns';

/**
 * With `awaiting_returns`, what holds the units a waiting ticket may still get: reservations not
 * yet paid for (an item that sells by reservation, config.reserveMs; some units may also be in a
 * sale still running), or only sales still running for tickets ahead (any other item with stock:
 * nothing is reserved, a unit comes back only if its sale fails). A waiting page must not tell a
 * buyer of the second kind that everything is reserved.
 */
export type ReturnsFrom = 'reservations' | 'sales';

export interface WaitingHints {
  etaMs?: number;
  pollAfterMs: number;
  reason?: WaitReason;
  returnsFrom?: ReturnsFrom;
}

/**
 * The admission rate the daemon expects for the item, from what it knows first: the operator's
 * rate in manual mode (the rate measured, when lower, while the in-flight cap is full), the
 * controller's pace (under the operator's ceiling) in auto mode, and the
 * rate measured over the last ~10 s only where neither says anything (an uncapped manual gate, an
 * auto gate whose controller has not spoken, a self-limited handler).
 */
export function expectedRate(item: CachedItem): number | null {
  const { gate } = item.snap;
  const measured = item.admitRate && item.admitRate > 0 ? item.admitRate : null;
  if (gate.mode === 'closed') return null;
  if (gate.mode === 'manual') {
    // A full in-flight cap is what admits (one ticket per one that ends), not the rate: the rate
    // measured says how fast. Read from the rate alone, a gate of 50/s capped at 2 in flight on a
    // 1 s downstream told a user at place 56 a wait of 1 s, and admitted them 28 s later.
    // (None measured while it is full, a downstream that stalled: no estimate, not the rate set.)
    if (item.capFull) return measured !== null && gate.rate !== null ? Math.min(gate.rate, measured) : measured;
    return gate.rate ?? measured;
  }
  // Auto: the controller's pace, but while its in-flight limit is full (or the operator's cap, the
  // lower of the two) that limit is what admits — the pace carries a 1.5× headroom over what it lets
  // through, and every place was told two thirds of its wait — and the rate measured says how fast,
  // as for a manual cap. Not otherwise: measured over the last seconds, it lags a pace that rose (at
  // a sale's opening, waits 3-5× too long were told).
  const pace = item.snap.pace?.rate ?? null;
  // (Full: item-cache.ts capFull, the lower of the controller's limit and the operator's cap.)
  const carried = item.capFull && pace !== null && measured !== null ? Math.min(pace, measured) : (pace ?? measured);
  return carried !== null && gate.rate !== null ? Math.min(gate.rate, carried) : (carried ?? gate.rate);
}

/**
 * The longest `pollAfterMs` a waiting ticket is told: 30 s, or a third of the item's
 * `abandonAfterMs` (at least 1 s; abandonAfterMs is at least 3 s). A user told to come back in 30 s by an item that expires tickets
 * not polled for 20 s was expired for doing as told (a line that moved faster than its ETA, or a
 * gate that opened). A third leaves room for the network, a late timer and the 1 s batching of
 * poll times.
 */
export const pollCap = (abandonAfterMs: number | null): number => (abandonAfterMs === null ? 30_000 : Math.max(1000, Math.min(30_000, Math.floor(abandonAfterMs / 3))));

/**
 * pollCap, and a third of what a ticket is given once admitted and must act on in time: the
 * reservation of its order (`config.reserveMs`) and its admission token (`tokenTtlMs`). A gate
 * that opened or sped up makes an ETA-based interval far too long: a user told to come back in
 * 30 s found `succeeded` with a 5 s reservation already released and a 1 s token expired (a review).
 */
export function pollLimit(def: { abandonAfterMs: number | null; tokenTtlMs?: number | null; config: Record<string, unknown> }): number {
  const reserveMs = typeof def.config.reserveMs === 'number' ? def.config.reserveMs : Infinity;
  const tokenMs = def.tokenTtlMs ?? Infinity;
  return Math.max(1000, Math.min(pollCap(def.abandonAfterMs), Math.floor(reserveMs / 3), Math.floor(tokenMs / 3)));
}

/**
 * Expected wait, when to poll again, and why the line is not moving. No ETA is given while the
 * gate is closed, the store the item sells through is away (Postgres down: the dispatcher admits
 * none of its tickets) or the item waits for units to come back (nobody knows when that ends); before
 * the sale opens, the ETA counts from `opensAt`. Clients far back poll rarely, so a line of a
 * million costs a trickle of polls, and those near the head poll every second.
 */
export function waitingHints(item: CachedItem, position: number, now: number): WaitingHints {
  const s = item.snap;
  let reason: WaitReason | undefined;
  if (s.def.opensAt !== null && now < s.def.opensAt) reason = 'not_open';
  else if (s.gate.mode === 'closed' || item.storeAway()) reason = 'paused';
  else if (s.stockLeft === 0 && !s.soldOut) reason = 'awaiting_returns';
  const rate = reason === 'paused' || reason === 'awaiting_returns' ? null : expectedRate(item);
  const untilOpen = reason === 'not_open' ? s.def.opensAt! - now : 0;
  const etaMs = rate ? Math.round(untilOpen + (position / rate) * 1000) : undefined;
  // (Before the opening, at least a fifth of the time to it, as a pre-queued ticket is told: with no
  // rate known, tickets behind an opensAt moved a day later were told to ask every second.)
  const guide = Math.max(etaMs !== undefined ? etaMs / 5 : position * 20, untilOpen / 5);
  // (And no later than the sale window's end: a ticket told an ETA past it learns of the close then.)
  const untilClose = s.def.closesAt !== null ? Math.max(1000, s.def.closesAt - now) : Infinity;
  const pollAfterMs = Math.round(Math.min(pollLimit(s.def), untilClose, Math.max(1000, guide)));
  const out: WaitingHints = { pollAfterMs };
  if (etaMs !== undefined) out.etaMs = etaMs;
  if (reason) out.reason = reason;
  // The same test as the item's `held` state (snapshot.ts itemState).
  if (reason === 'awaiting_returns') out.returnsFrom = s.def.config.reserveMs !== undefined ? 'reservations' : 'sales';
  return out;
}

/**
 * A waiting ticket's place: the tickets between the head and it, less those that left the line,
 * after the tickets returned to the head (admitted first). Without them, two tickets read place 1
 * while the returned ones waited (a closed gate, a Postgres outage) and every ETA was short.
 */
export function linePosition(item: CachedItem, served: number, seq: number): number {
  const place = item.lineIndex(seq);
  return place - served - item.cancelledBetween(served, place) + item.snap.returned;
}

/** A pre-queued ticket whose place is not drawn yet: it joined before opensAt (the join script's test) and the draw is not done. */
export const awaitingDraw = (item: CachedItem, rec: TicketRecord) => {
  const d = item.snap.draw;
  return d !== null && !d.drawn && rec.createdAt < item.snap.def.opensAt!;
};

/** What a pre-queued ticket reads until the draw: no position yet, and when it will have one. */
export function preQueueHints(item: CachedItem, now: number): { position: null; drawAt: string; pollAfterMs: number; reason: WaitReason } {
  const opensAt = item.snap.def.opensAt!;
  return { position: null, drawAt: iso(opensAt), pollAfterMs: Math.round(Math.min(pollLimit(item.snap.def), Math.max(1000, (opensAt - now) / 5))), reason: 'not_open' };
}

export function baseView(ticketId: string, itemId: string, rec: TicketRecord & { createdIso?: string }, state: TicketState): TicketView {
  const created = rec.createdIso ?? iso(rec.createdAt);
  return { ticketId, itemId, userId: rec.userId, state, createdAt: created, updatedAt: created };
}

/** A ticket that a cut (close, sell-out) ended while it waited. */
export function cutView(ticketId: string, itemId: string, rec: TicketRecord & { createdIso?: string }, cut: Cut): TicketView {
  const state = stateByChar[cut[1]];
  return { ...baseView(ticketId, itemId, rec, state), updatedAt: iso(cut[3]), outcome: { status: state as Outcome['status'], reason: cut[2] } };
}

/** A ticket read from Redis (x = its times and outcome hash; rank = place among returned tickets). */
export function fullView(
  ticketId: string,
  item: CachedItem,
  rec: TicketRecord,
  x: Record<string, string>,
  served: number,
  seq: number,
  retryRank: number,
  cut: Cut | null,
  now: number,
  /** A split item's position (queue/split-line.ts), instead of the one line's. */
  splitPosition?: number,
): TicketView {
  if (cut) return cutView(ticketId, item.snap.def.itemId, rec, cut);
  const v = baseView(ticketId, item.snap.def.itemId, rec, rec.state);
  if (x.updatedAt) v.updatedAt = iso(Number(x.updatedAt));
  if (x.admittedAt) v.admittedAt = iso(Number(x.admittedAt));
  if (rec.state === 'waiting' && retryRank < 0 && awaitingDraw(item, rec)) return { ...v, ...preQueueHints(item, now) };
  if (rec.state === 'waiting') {
    const position = retryRank >= 0 ? retryRank + 1 : (splitPosition ?? linePosition(item, served, seq));
    return { ...v, position, ...waitingHints(item, position, now) };
  }
  if (rec.state === 'admitted') return { ...v, pollAfterMs: 1000 };
  if (x.outcome) v.outcome = JSON.parse(x.outcome);
  return v;
}
