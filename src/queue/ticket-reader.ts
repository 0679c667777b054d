import type { Clock } from '../kernel/clock.js';
import { fail, FloodgateError } from '../kernel/errors.js';
import { recentMap } from '../kernel/recent-map.js';
import { ticketRef } from '../kernel/ticket-ref.js';
import { withTimeout } from '../kernel/wait.js';
import type { CachedItem } from './item-cache.js';
import type { ItemDirectory } from './items.js';
import type { LineScripts } from './line-scripts.js';
import type { LostTickets } from './lost-tickets.js';
import { splitOf, type SplitLine } from './split-line.js';
import { createRecordCache } from './record-cache.js';
import { parseTicketId, verifyBinding, verifySeq } from './ticket-id.js';
import type { Outcome, TicketView } from './types.js';
import { awaitingDraw, baseView, bindingOf, cachedRecord, cutView, fullView, linePosition, parseRecord, preQueueHints, waitingHints, type CachedRecord, type TicketRecord } from './views.js';

/**
 * The outcome ledger's copy of an ended ticket, by ticket ref: read when the ticket's own state
 * has left Redis (after FLOODGATE_TICKET_STATE_TTL_MS, once its row was committed).
 */
export type ArchivedOutcome = (ticketRef: string) => Promise<{ outcome: Outcome; admittedAt: number | null; finishedAt: number } | null>;

/**
 * How a ticket id becomes a view: the id is checked (its seq half before any read, its binding
 * half against the record), and a waiting ticket is answered from the cached item view where
 * that can tell, else read from Redis.
 */
/** How long a cancel waits for Postgres's word on an end a rollback took back (TicketReader.heldEnd). */
const HELD_END_TIMEOUT_MS = 1000;

/** How long a poll waits for the ledger's row of a ticket whose state left Redis (then 503). */
const ARCHIVED_READ_MS = 2000;

export function createTicketReader(deps: { items: ItemDirectory; scripts: LineScripts; split: SplitLine; clock: Clock; archived?: ArchivedOutcome; lost?: LostTickets }) {
  const { items, clock } = deps;
  const records = createRecordCache(500_000);
  /** What the ledger held, asked after a rollback, per ticket id and item life (null: no end). */
  const afterRollback = recentMap<string, TicketView | null>(50_000);
  /** Those looks under way (endAfterRollback). */
  const looks = new Map<string, Promise<TicketView | null>>();
  /**
   * Ledger rows read for tickets whose state left Redis, per ref: an end is written once and never
   * changes. Without it every poll of such a ticket asked Postgres, and answered 503 while Postgres
   * was away (an ended ticket read 200 just before its state left Redis), or hung for the driver's
   * 15 s while it was silent (a review's run).
   */
  const archivedRows = recentMap<string, NonNullable<Awaited<ReturnType<ArchivedOutcome>>>>(50_000);
  async function archivedRow(ref: string) {
    const kept = archivedRows.get(ref);
    if (kept) return kept;
    const row = await withTimeout(deps.archived!(ref), ARCHIVED_READ_MS, () => new FloodgateError('unavailable', "The ticket's end is kept in Postgres, which does not answer now; try again shortly.", undefined, 2));
    if (row) archivedRows.set(ref, row);
    return row;
  }

  async function resolve(ticketId: string): Promise<{ item: CachedItem; seq: number }> {
    const parsed = parseTicketId(ticketId);
    const item = parsed && (await items.isKnown(parsed.itemId)) ? await items.item(parsed.itemId) : null;
    if (!parsed || !item) fail('ticket_not_found', 'No such ticket.');
    deps.lost?.learn(parsed!.itemId, item!.snap.secret, item!.snap.def.handler);
    // An id in the record cache was verified whole when it was stored: the HMAC runs once per ticket and process.
    if (records.get(ticketId)?.secret !== item!.recordKey && !verifySeq(parsed!, item!.snap.secret)) fail('ticket_not_found', 'No such ticket.');
    return { item: item!, seq: parsed!.seq };
  }

  /** The ticket's record, once the id's binding half matches it (else: not this id's ticket). */
  function bound(ticketId: string, item: CachedItem, record: string | null): TicketRecord {
    const rec = record ? parseRecord(record, item.snap.epoch) : null;
    const parsed = parseTicketId(ticketId)!;
    if (!rec || !verifyBinding(parsed, item.snap.secret, bindingOf(rec, item.snap.epoch))) fail('ticket_not_found', 'No such ticket.');
    return rec!;
  }

  async function read(ticketId: string, item: CachedItem, seq: number): Promise<TicketView> {
    const itemId = item.snap.def.itemId;
    const sub = splitOf(item.snap.def);
    // A split item's ticket: read on its sub-line, its position n − A (no cached path: the cache counts one line).
    const { record, x, served, retryRank, cut, position } = sub ? { served: 0, ...(await deps.split.readTicket(sub, seq)) } : { position: undefined, ...(await deps.scripts.readTicket(itemId, clock.now(), seq)) };
    let rec = bound(ticketId, item, record);
    // Waiting or admitted in Redis on an item this process saw roll back: the ledger may hold the
    // ticket's end, which its user was told (a poll read `waiting`, place 1, after `succeeded`,
    // until the line reached the ticket and ended it again: never, behind a closed gate).
    let unread = false;
    if (rec.state === 'waiting' || rec.state === 'admitted') {
      const end = await endAfterRollback(ticketId, item);
      if (end) return end;
      unread = end === undefined;
    }
    if (!x.outcome && rec.state !== 'waiting' && rec.state !== 'admitted' && deps.archived) {
      const old = await archivedRow(ticketRef(ticketId));
      if (old) {
        // The ledger's end stands whole: a Redis rolled back past it may have ended the ticket
        // again otherwise (its first row is kept), and the view read one state and another outcome.
        if (old.outcome.status !== rec.state) rec = { ...rec, state: old.outcome.status };
        x.outcome = JSON.stringify(old.outcome);
        x.updatedAt = String(old.finishedAt);
        if (old.admittedAt !== null) x.admittedAt = String(old.admittedAt);
      }
    }
    // (Not while the ledger's word on it is unread: polls answered from the cache never ask again,
    // and a ticket whose end a slow ledger read missed once read `waiting` for good.)
    if (rec.state === 'waiting' && !cut && !unread) records.set(ticketId, cachedRecord(rec, itemId, seq, item.recordKey));
    // Placed from the head as the item's view has it, as the next poll (from that view, cachedWaiting)
    // will place it: from Redis's head, fresher by the admissions of up to the cache time, a place
    // read 6 became 16 at the next poll (a rise, and two users told one place meanwhile).
    // A split item's place in the line (n − A) comes after the tickets returned to the head, as on
    // one line (linePosition): without them, a returned ticket and the first in line both read 1.
    return fullView(ticketId, item, rec, x, Math.min(served, item.snap.served), seq, retryRank, cut, clock.now(), position === null || position === undefined ? undefined : position + item.snap.returned);
  }

  /** A waiting ticket still in the line, answered from the cache alone; null when unsure. */
  function cachedWaiting(ticketId: string, item: CachedItem, seq: number, rec: TicketRecord | undefined): TicketView | null {
    const s = item.snap;
    if (!rec || !item.feedComplete || seq > s.seq || item.cancelled.has(seq) || splitOf(s.def)) return null;
    // Past the head first: a cut moves the head past every seq it ended, and a pre-queue closed
    // before its draw has ended its tickets, which must not read as awaiting the draw.
    if (item.lineIndex(seq) <= s.served) return null;
    if (awaitingDraw(item, rec)) return { ...baseView(ticketId, s.def.itemId, rec, 'waiting'), ...preQueueHints(item, clock.now()) };
    const position = linePosition(item, s.served, seq);
    return { ...baseView(ticketId, s.def.itemId, rec, 'waiting'), position, ...waitingHints(item, position, clock.now()) };
  }

  /** A ticket seen waiting that the item's last cut ended, told from the cut's range alone. */
  function cachedCut(ticketId: string, item: CachedItem, rec: CachedRecord): TicketView | null {
    const s = item.snap;
    const cut = s.cuts[s.cuts.length - 1];
    // served-before (a line place) is what separates tickets admitted before the cut from those it ended.
    // (Not a cut that held some of its range in doubt, buyers a Redis rollback had put back in line: Redis says which.)
    if (!cut || cut[4] === undefined || cut[5] || item.lineIndex(rec.seq) <= cut[4] || rec.seq > cut[0] || splitOf(s.def)) return null;
    if (!item.feedComplete || item.cancelled.has(rec.seq)) return null;
    return cutView(ticketId, s.def.itemId, rec, cut);
  }

  /**
   * What Postgres holds for an id Redis does not know (`err`: Redis's ticket_not_found), else `err`
   * is thrown: an id of a ticket Redis lost (a flush, a rollback) or removed (retention) whose
   * outcome or sale Postgres has. Only ids whose seq half verifies cost a query (lost-tickets.ts).
   */
  async function fromPostgres(ticketId: string, err: unknown): Promise<{ view: TicketView; source: string | null }> {
    if (!(err instanceof FloodgateError && err.code === 'ticket_not_found') || !deps.lost) throw err;
    const parsed = parseTicketId(ticketId);
    const live = parsed ? deps.items.peek(parsed.itemId)?.snap.secret : undefined;
    const got = await deps.lost.view(ticketId, live);
    if (!got) throw err;
    return got;
  }

  /** The end Postgres holds for a ticket Redis holds (one a rollback revived), or null; no lookup without the lost-ticket store. */
  const heldEnd = deps.lost
    ? async (ticketId: string, item: CachedItem): Promise<TicketView | null> =>
        // Bounded (a Postgres that stalls must not hold a cancel for the driver's own timeout); the caller decides what "unread" means.
        (await withTimeout(deps.lost!.view(ticketId, item.snap.secret, { live: true }), HELD_END_TIMEOUT_MS, 'outcome ledger read timed out'))?.view ?? null
    : null;

  /**
   * The end the ledger holds for a ticket Redis holds live, on an item this process saw roll back
   * (else null, with no lookup): asked once per ticket and rollback, the answer kept. Undefined:
   * the ledger did not answer in time (asked again next time).
   */
  async function endAfterRollback(ticketId: string, item: CachedItem): Promise<TicketView | null | undefined> {
    if (!item.rolledBack || !deps.lost) return null;
    const key = `${ticketId}#${item.recordKey}`;
    let end = afterRollback.get(key);
    if (end === undefined) {
      // One look per ticket at a time, whoever asks (a slow Postgres queued one per poll), kept when it ends late.
      let look = looks.get(key);
      if (!look) {
        look = deps.lost.view(ticketId, item.snap.secret, { live: true }).then((got) => got?.view ?? null);
        looks.set(key, look);
        look.then((v) => void afterRollback.set(key, v), () => undefined).finally(() => looks.delete(key));
      }
      end = await withTimeout(look, HELD_END_TIMEOUT_MS, 'outcome ledger read timed out').catch(() => undefined);
      if (end === undefined) return undefined;
    }
    return end && end.state !== 'waiting' && end.state !== 'admitted' ? end : null;
  }

  return { records, resolve, bound, read, cachedWaiting, cachedCut, fromPostgres, heldEnd, endAfterRollback };
}

export type TicketReader = ReturnType<typeof createTicketReader>;
