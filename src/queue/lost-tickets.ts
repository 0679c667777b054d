import type { Clock } from '../kernel/clock.js';
import { recentMap } from '../kernel/recent-map.js';
import { ticketRef } from '../kernel/ticket-ref.js';
import { parseTicketId, verifySeq } from './ticket-id.js';
import type { Outcome, TicketView } from './types.js';

/**
 * Tickets whose state Redis no longer holds, answered from Postgres: after a Redis loss (a flush,
 * a restart without its data: the item is made again, with its secret kept in Postgres), a
 * rollback (an id issued in the lost seconds: its seq went to another ticket, whose record its
 * binding half does not match), or retention (the ended item's keys are gone). Postgres keeps
 * each ended ticket's outcome under the ticket's ref (ticket_outcomes), and each sale under it
 * (orders, coupon_claims): a sale whose ledger entry the loss took is found there.
 *
 * The id is looked up only after its seq half verified against the item's secret (from the live
 * item, or from Postgres's rows, loaded in the background: never on a request), so a forged or
 * random id costs no Postgres query, as before. The lookup is by the ref of the whole id, so an
 * id names only the ticket it was made for: a seq issued again after a loss makes a different id
 * (the binding half covers the user and the join time), and the new ticket's row is under its own
 * ref. A holder of one real id can vary its binding half; each (item, seq) is looked up for at
 * most MISSES_PER_SEQ refs Postgres had nothing for per NEGATIVE_MS, so that costs little too.
 */
/** Postgres's rows of one ticket by ref (db/outcomes.ts readLostTicket): its ledger row, else its sale. */
export type LostTicketRow =
  | { from: 'outcome'; itemId: string; userId: string; status: string; reason: string | null; result: unknown; joinedAt: number; admittedAt: number | null; finishedAt: number; source: string | null }
  | { from: 'orders' | 'coupon_claims'; itemId: string; userId: string; id: string; released: boolean; reservedUntil: string | null; at: number };

export interface LostTickets {
  /**
   * The view Postgres holds for this id, null when it holds none or the id does not verify.
   * `live`: asked of a ticket Redis holds live (a cancel's check for an end a rollback took back):
   * its "none" is not remembered, for the ticket may end the next moment (a cancel) and its id be
   * asked of again after a loss, when "none" remembered for 30 s answered 404 for a cancelled one.
   */
  view(ticketId: string, liveSecret?: string, opts?: { live?: boolean }): Promise<{ view: TicketView; source: string | null } | null>;
  /** Learns an item's secret (a live item read from Redis, a definition). */
  learn(itemId: string, secret: string, handler: string): void;
  /** Reads every item's secret from Postgres (at start, then every minute). */
  load(): Promise<void>;
  /** Postgres lookups made (tests). */
  readonly queries: number;
}

export interface LostTicketsDeps {
  clock: Clock;
  read(ref: string): Promise<LostTicketRow | null>;
  /** The items' secrets: every row, or (`since`) those made or changed since then. */
  secrets(since: Date | null): Promise<{ itemId: string; secret: string | null; handler: string }[]>;
  /** The result a sale of this handler's succeeded ticket carries (its spec's saleResult; `{ id }` without one). */
  saleResult(handler: string | undefined, sale: { id: string; userId: string; reservedUntil?: string }): unknown;
}

/** How long Postgres's "nothing" for a ref is believed (a sale in flight at the loss may still commit). */
const NEGATIVE_MS = 30_000;
/**
 * A load reads the rows made or changed since the last one began (less OVERLAP_MS, for clocks and
 * commits in flight; every write of a secret moves updated_at), and every row once per FULL_LOAD_MS: every row each minute read every item ever made
 * (archived ones stay), ~365,000 rows a minute per process after a year of 1,000 items a day.
 */
const FULL_LOAD_MS = 3_600_000;
const OVERLAP_MS = 300_000;
const MISSES_PER_SEQ = 4;

export function createLostTickets(deps: LostTicketsDeps): LostTickets {
  /** itemId → secret and handler, from Postgres's rows and the live items seen. */
  let known = new Map<string, { secret: string; handler: string }>();
  const learnt = new Map<string, { secret: string; handler: string }>();
  /** Found views (an ended ticket's outcome never changes): by ref. */
  const found = recentMap<string, { view: Omit<TicketView, 'ticketId'>; source: string | null }>(50_000);
  /** Refs Postgres had nothing for, until when. */
  const missing = recentMap<string, number>(100_000);
  /** (item, seq) → refs missed lately, and since when. */
  const misses = recentMap<string, { n: number; since: number }>(100_000);
  const loads = { fullAt: -Infinity, lastAt: -Infinity };
  const inFlight = new Map<string, Promise<{ view: Omit<TicketView, 'ticketId'>; source: string | null } | null>>();
  let queries = 0;

  const secretsOf = (itemId: string, live?: string) => {
    const out: string[] = [];
    if (live) out.push(live);
    for (const e of [learnt.get(itemId), known.get(itemId)]) if (e && !out.includes(e.secret)) out.push(e.secret);
    return out;
  };
  const handlerOf = (itemId: string) => learnt.get(itemId)?.handler ?? known.get(itemId)?.handler;

  function toView(row: LostTicketRow): { view: Omit<TicketView, 'ticketId'>; source: string | null } {
    const iso = (ms: number) => new Date(ms).toISOString();
    if (row.from === 'outcome') {
      const outcome: Outcome = { status: row.status as Outcome['status'] };
      if (row.reason !== null) outcome.reason = row.reason;
      if (row.result !== null && row.result !== undefined) outcome.result = row.result;
      const view: Omit<TicketView, 'ticketId'> = { itemId: row.itemId, userId: row.userId, state: outcome.status, createdAt: iso(row.joinedAt), updatedAt: iso(row.finishedAt), outcome };
      if (row.admittedAt !== null) view.admittedAt = iso(row.admittedAt);
      return { view, source: row.source };
    }
    // A sale without its ledger row: succeeded with the sale's result, as the doubt resolver ends
    // such a ticket (service/doubt-resolver.ts); an order released since is no sale of its any more.
    // The join time is not kept with a sale: the sale's time stands for it.
    const outcome: Outcome = row.released
      ? { status: 'rejected', reason: 'reservation_released' }
      : { status: 'succeeded', result: deps.saleResult(handlerOf(row.itemId), { id: row.id, userId: row.userId, ...(row.reservedUntil ? { reservedUntil: row.reservedUntil } : {}) }) };
    return { view: { itemId: row.itemId, userId: row.userId, state: outcome.status, createdAt: iso(row.at), updatedAt: iso(row.at), outcome }, source: null };
  }

  return {
    get queries() {
      return queries;
    },

    learn(itemId, secret, handler) {
      const e = learnt.get(itemId);
      if (e?.secret === secret && e.handler === handler) return;
      if (learnt.size > 100_000) learnt.clear();
      learnt.set(itemId, { secret, handler });
    },

    async load() {
      const began = deps.clock.now();
      const full = began - loads.fullAt >= FULL_LOAD_MS;
      const rows = await deps.secrets(full ? null : new Date(loads.lastAt - OVERLAP_MS));
      const next = full ? new Map<string, { secret: string; handler: string }>() : known;
      for (const r of rows) if (r.secret) next.set(r.itemId, { secret: r.secret, handler: r.handler });
      known = next;
      if (full) loads.fullAt = began;
      loads.lastAt = began;
    },

    async view(ticketId, liveSecret, opts) {
      const live = opts?.live ?? false;
      const parsed = parseTicketId(ticketId);
      if (!parsed) return null;
      // The seq half first, from memory alone: a forged or random id stops here.
      if (!secretsOf(parsed.itemId, liveSecret).some((s) => verifySeq(parsed, s))) return null;
      const ref = ticketRef(ticketId);
      const hit = found.get(ref);
      if (hit) return { view: { ticketId, ...hit.view }, source: hit.source };
      const now = deps.clock.now();
      if (!live && (missing.get(ref) ?? 0) > now) return null;
      let got = live ? undefined : inFlight.get(ref);
      if (!got) {
        const seqKey = `${parsed.itemId}|${parsed.seq}`;
        const m = misses.get(seqKey);
        if (!live && m && now - m.since < NEGATIVE_MS && m.n >= MISSES_PER_SEQ) return null;
        queries++;
        got = deps
          .read(ref)
          .then((row) => {
            if (!row && live) return null;
            if (!row) {
              missing.set(ref, now + NEGATIVE_MS);
              misses.set(seqKey, m && now - m.since < NEGATIVE_MS ? { n: m.n + 1, since: m.since } : { n: 1, since: now });
              return null;
            }
            const v = toView(row);
            // (A reserved order may yet be released: read again next time.)
            if (row.from === 'outcome' || !row.reservedUntil || row.released) found.set(ref, v);
            return v;
          })
          .finally(() => {
            if (inFlight.get(ref) === got) inFlight.delete(ref);
          });
        if (!live) inFlight.set(ref, got);
      }
      const v = await got;
      return v ? { view: { ticketId, ...v.view }, source: v.source } : null;
    },
  };
}
