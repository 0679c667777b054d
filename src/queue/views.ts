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
  /** The item's secret when the id was verified: a re-created item (new secret) voids the entry. */
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

/**
 * Expected wait and when to poll again. The ETA comes from the admission rate measured over the
 * last ~10 s (or the manual gate's rate before any admission); clients far back poll rarely, so
 * a line of a million costs a trickle of polls, and those near the head poll every second.
 */
export function waitingHints(item: CachedItem, position: number): { etaMs?: number; pollAfterMs: number } {
  const rate = item.admitRate && item.admitRate > 0 ? item.admitRate : item.snap.gate.mode === 'manual' ? item.snap.gate.rate : null;
  const etaMs = rate ? Math.round((position / rate) * 1000) : undefined;
  const guide = etaMs !== undefined ? etaMs / 5 : position * 20;
  const pollAfterMs = Math.round(Math.min(30_000, Math.max(1000, guide)));
  return etaMs === undefined ? { pollAfterMs } : { etaMs, pollAfterMs };
}

export function baseView(ticketId: string, itemId: string, rec: TicketRecord & { createdIso?: string }, state: TicketState): TicketView {
  const created = rec.createdIso ?? iso(rec.createdAt);
  return { ticketId, itemId, userId: rec.userId, state, createdAt: created, updatedAt: created };
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
): TicketView {
  if (cut) {
    const state = stateByChar[cut[1]];
    const v = baseView(ticketId, item.snap.def.itemId, rec, state);
    return { ...v, updatedAt: iso(cut[3]), outcome: { status: state as Outcome['status'], reason: cut[2] } };
  }
  const v = baseView(ticketId, item.snap.def.itemId, rec, rec.state);
  if (x.updatedAt) v.updatedAt = iso(Number(x.updatedAt));
  if (x.admittedAt) v.admittedAt = iso(Number(x.admittedAt));
  if (rec.state === 'waiting') {
    const position = retryRank >= 0 ? retryRank + 1 : seq - served;
    return { ...v, position, ...waitingHints(item, position) };
  }
  if (rec.state === 'admitted') return { ...v, pollAfterMs: 1000 };
  if (x.outcome) v.outcome = JSON.parse(x.outcome);
  return v;
}
