import { canonicalJson } from '../kernel/canonical-json.js';
import type postgres from 'postgres';
import { escapeUnsafe } from '../kernel/safe-text.js';
import { isBadRow, isConnectionLoss } from './refusal.js';
import { begin } from './transactions.js';

export interface OutcomeRow {
  ticketId: string;
  itemId: string;
  userId: string;
  status: string;
  reason: string | null;
  result: unknown;
  joinedAt: Date;
  admittedAt: Date | null;
  finishedAt: Date;
  /** The name of the key that created the ticket, where one was recorded. */
  source?: string | null;
}

/** Appends ended tickets to the outcome ledger in one statement; a row already there is kept. */
export async function insertOutcomes(sql: postgres.Sql, rows: OutcomeRow[]): Promise<number> {
  if (!rows.length) return 0;
  const res = await sql`
    insert into ticket_outcomes (ticket_id, item_id, user_id, status, reason, result, joined_at, admitted_at, finished_at, source)
    select t, i, u, s, r, res::jsonb, j::timestamptz, a::timestamptz, f::timestamptz, k from unnest(
      ${rows.map((r) => r.ticketId)}::text[], ${rows.map((r) => r.itemId)}::text[], ${rows.map((r) => r.userId)}::text[],
      ${rows.map((r) => r.status)}::text[], ${rows.map((r) => r.reason)}::text[],
      ${rows.map((r) => (r.result === null || r.result === undefined ? null : JSON.stringify(r.result)))}::text[],
      ${rows.map((r) => r.joinedAt.toISOString())}::text[], ${rows.map((r) => r.admittedAt?.toISOString() ?? null)}::text[],
      ${rows.map((r) => r.finishedAt.toISOString())}::text[], ${rows.map((r) => r.source ?? null)}::text[]) as v(t, i, u, s, r, res, j, a, f, k)
    on conflict (ticket_id) do nothing`;
  return res.count;
}

/**
 * Tickets whose users cancelled them, once the ledger holds the cancel: their sale is refused from
 * then on (voided_tickets, 0010). A Redis rollback may take the cancel back (the ticket waiting
 * again, its user told "cancelled", the ledger's row saying so), and the revived ticket was
 * admitted and sold. (A cancel the rollback took before the ledger wrote it is lost with Redis.)
 * Only a cancel the ledger holds as the ticket's end: a ticket that had sold before a rollback
 * and was then cancelled again keeps its first row (insertOutcomes keeps the row there), and
 * voiding it refused its own sale's replay.
 */
export async function voidCancelled(sql: postgres.Sql, rows: OutcomeRow[]): Promise<void> {
  const cancelled = rows.filter((r) => r.status === 'cancelled' && r.reason === 'cancelled_by_user');
  if (!cancelled.length) return;
  await sql`
    insert into voided_tickets (ticket_id, item_id)
    select ticket_id, item_id from ticket_outcomes
    where ticket_id = any(${cancelled.map((r) => r.ticketId)}::text[]) and status = 'cancelled' and reason = 'cancelled_by_user'
    on conflict do nothing`;
}

/** A ticket's end as the ledger holds it, in the shape of a ticket view's outcome (no null fields). */
export interface LedgerEnd {
  status: string;
  reason?: string;
  result?: unknown;
}

/** The end the ledger holds for each of these refs (those it holds one for). */
export async function readEnds(sql: postgres.Sql, refs: string[]): Promise<Map<string, LedgerEnd>> {
  const out = new Map<string, LedgerEnd>();
  if (!refs.length) return out;
  const rows = await sql<{ ticket_id: string; status: string; reason: string | null; result: unknown }[]>`
    select ticket_id, status, reason, result from ticket_outcomes where ticket_id = any(${refs}::text[])`;
  // (Results as they were kept and shown, keys sorted: jsonb orders them shorter first.)
  for (const r of rows) out.set(r.ticket_id, { status: r.status, ...(r.reason !== null && { reason: r.reason }), ...(r.result !== null && { result: canonicalJson(r.result) }) });
  return out;
}

/**
 * The item's tickets the ledger holds as `succeeded`, by user and ref, the latest `limit`: what a
 * cut must not end as undone if Redis has them waiting (queue/definitions.ts; a Redis rollback
 * took back their end). The latest, as a rollback takes back the last seconds or minutes: a
 * webhook item with 100,000 ends read them all in 100–240 ms beside other load, and a cut waited.
 * The item is matched as a range, not `=`, so that the order by item too leaves Postgres only the
 * item's index to read it from (db/sales.ts saleRefs says why).
 */
export async function succeededRefs(sql: postgres.Sql | postgres.TransactionSql, itemId: string, limit: number): Promise<{ userId: string; ref: string }[]> {
  const rows = await sql<{ user_id: string; ticket_id: string }[]>`
    select user_id, ticket_id from ticket_outcomes where item_id >= ${itemId} and item_id <= ${itemId} and status = 'succeeded'
    order by item_id desc, finished_at desc limit ${limit}`;
  return rows.map((r) => ({ userId: r.user_id, ref: r.ticket_id }));
}

/** A row (or an unreadable done-stream entry) the ledger parks in `ticket_outcomes_dead`. */
export interface DeadOutcome {
  itemId: string;
  /** Null for a stream entry that could not be read as tickets. */
  ticketId: string | null;
  fields: unknown;
  error: unknown;
}

/** Most rows in one insert (a ledger round may carry a hundred items' batches). */
const MAX_ROWS = 5000;

/**
 * Appends rows like insertOutcomes, in inserts of at most MAX_ROWS, but one row Postgres refuses
 * for what it holds (NUL in a result, a lone surrogate in a reason: a data exception or an
 * integrity violation, or a value the driver cannot send) does not hold up the others: a refused
 * insert is split in halves until the rows that fail alone are found (k bad rows in n cost
 * ~2k·log2(n) statements, where one row at a time cost n), and those are parked in
 * `ticket_outcomes_dead`. Returns the rows parked. Any other error — a lost connection
 * (db/refusal.ts), or one that would refuse every row alike (a lock or statement timeout, a
 * permission, a migration under way) — is thrown, and nothing of the call is parked then: the
 * caller keeps its entries for a later round instead of parking good rows.
 */
export async function writeOutcomes(sql: postgres.Sql, rows: OutcomeRow[]): Promise<DeadOutcome[]> {
  const dead: DeadOutcome[] = [];
  const place = async (part: OutcomeRow[]): Promise<void> => {
    try {
      await insertOutcomes(sql, part);
    } catch (err) {
      // Split only what a row can cause (or a timeout a smaller insert may pass); the rest would
      // refuse every part alike.
      if (isConnectionLoss(err) || !(refusesRow(err) || codeOf(err) === STATEMENT_TIMEOUT)) throw err;
      if (part.length > 1) {
        const half = Math.ceil(part.length / 2);
        await place(part.slice(0, half));
        return place(part.slice(half));
      }
      if (!refusesRow(err)) throw err;
      dead.push({ itemId: part[0].itemId, ticketId: part[0].ticketId, fields: part[0], error: err });
    }
  };
  for (let i = 0; i < rows.length; i += MAX_ROWS) await place(rows.slice(i, i + MAX_ROWS));
  return insertDeadOutcomes(sql, dead);
}

const codeOf = (err: unknown) => (err as { code?: unknown } | null)?.code;
const STATEMENT_TIMEOUT = '57014';
/**
 * A row's own fault: Postgres's data or integrity classes, or an error raised before Postgres saw
 * the row — by the driver for a value it cannot send (UNDEFINED_VALUE; its other codes are about
 * the connection or the call, alike for every row) or while building the statement (no code: an
 * Invalid Date, a BigInt).
 */
const refusesRow = (err: unknown) => {
  const code = codeOf(err);
  return isBadRow(err) || typeof code !== 'string' || code === 'UNDEFINED_VALUE';
};

/**
 * Parks rows, every field made safe for text, and returns those it parked now: a ticket already
 * parked is kept as it was, and so is an entry with no ticket (unreadable) whose row is there (its
 * fields name the stream entry). The ledger parks what it reads again after an acknowledgement
 * Redis did not take: each such round counted the same dead letters again, and an unreadable
 * entry had a row per round (a null ticket id conflicts with nothing; an observability review's find).
 */
export async function insertDeadOutcomes(sql: postgres.Sql, dead: DeadOutcome[]): Promise<DeadOutcome[]> {
  if (!dead.length) return [];
  const rows = dead.map((d) => ({ d, itemId: escapeUnsafe(d.itemId), ticketId: d.ticketId === null ? null : escapeUnsafe(d.ticketId), fields: jsonText(d.fields) }));
  // A parked row's key: its ticket, or, with none, its item and stream entry (its fields).
  const key = (itemId: string, ticketId: string | null, fields: string) => JSON.stringify(ticketId !== null ? [ticketId] : [itemId, fields]);
  const entries = [...new Set(rows.filter((r) => r.ticketId === null).map((r) => key(r.itemId, null, r.fields)))].sort();
  // Entries with no ticket (no unique key to conflict on): two daemons parking the same one at
  // once would each find it not parked yet, so each is parked under a lock of its own (rare: an
  // unreadable stream entry), taken in one order.
  const insert = (q: postgres.Sql | postgres.TransactionSql) => q<{ item_id: string; ticket_id: string | null; fields: string }[]>`
    insert into ticket_outcomes_dead (item_id, ticket_id, fields, error)
    select d.item_id, d.ticket_id, d.fields, d.error from unnest(
      ${rows.map((r) => r.itemId)}::text[], ${rows.map((r) => r.ticketId)}::text[],
      ${rows.map((r) => r.fields)}::text[], ${dead.map((d) => escapeUnsafe(describe(d.error)))}::text[]) as d(item_id, ticket_id, fields, error)
    where d.ticket_id is not null
       or not exists (select 1 from ticket_outcomes_dead x where x.item_id = d.item_id and x.ticket_id is null and x.fields = d.fields)
    on conflict do nothing
    returning item_id, ticket_id, fields`;
  const parked = entries.length
    ? await begin(sql, async (tx) => {
        for (const e of entries) await tx`select pg_advisory_xact_lock(hashtext('floodgate_dead_entry'), hashtext(${e}))`;
        return insert(tx);
      })
    : await insert(sql);
  // (Each row parked matches one entry: the same ticket twice in one batch is one row, counted once.)
  const now = new Set(parked.map((p) => key(p.item_id, p.ticket_id, p.fields)));
  return rows.filter((r) => now.delete(key(r.itemId, r.ticketId, r.fields))).map((r) => r.d);
}

/** JSON text of anything (JSON.stringify escapes NUL and lone surrogates itself). */
function jsonText(v: unknown): string {
  try {
    return JSON.stringify(v) ?? 'null';
  } catch (err) {
    return JSON.stringify({ unserialisable: describe(err) });
  }
}

function describe(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  const message = err instanceof Error ? err.message : String(err);
  return typeof code === 'string' ? `${code}: ${message}` : message;
}

/** The ledger's row of one ended ticket (by ticket ref), as the ticket view needs it. */
export async function readOutcome(sql: postgres.Sql, ticketRef: string) {
  const [r] = await sql`select status, reason, result, admitted_at, finished_at from ticket_outcomes where ticket_id = ${ticketRef}`;
  if (!r) return null;
  const outcome: { status: string; reason?: string; result?: unknown } = { status: r.status };
  if (r.reason !== null) outcome.reason = r.reason;
  if (r.result !== null) outcome.result = canonicalJson(r.result);
  // (timestamps arrive as strings or Dates depending on the client's parsers)
  return { outcome, admittedAt: r.admitted_at ? new Date(r.admitted_at).getTime() : null, finishedAt: new Date(r.finished_at).getTime() };
}

/** What Postgres holds of one ticket (by ref) whose state Redis no longer has: its ledger row, else its sale. */
export type LostTicketRow =
  | { from: 'outcome'; itemId: string; userId: string; status: string; reason: string | null; result: unknown; joinedAt: number; admittedAt: number | null; finishedAt: number; source: string | null }
  | { from: 'orders' | 'coupon_claims'; itemId: string; userId: string; id: string; released: boolean; reservedUntil: string | null; at: number };

/**
 * The outcome ledger's row of a ticket, or — where the ledger never got it (Redis lost the entry
 * before it was written) — its order or coupon claim: one statement, the ledger's row first.
 */
export async function readLostTicket(sql: postgres.Sql, ticketRef: string): Promise<LostTicketRow | null> {
  const [r] = await sql`
    select * from (
      select 1 as k, item_id, user_id, status, reason, result, joined_at, admitted_at, finished_at, source, null::text as id, null::timestamptz as reserved_until
        from ticket_outcomes where ticket_id = ${ticketRef}
      union all
      select 2, item_id, user_id, status, null, null, null, null, created_at, null, order_id::text, reserved_until from orders where ticket_id = ${ticketRef}
      union all
      select 3, item_id, user_id, 'claimed', null, null, null, null, created_at, null, claim_id::text, null from coupon_claims where ticket_id = ${ticketRef}
    ) t order by k limit 1`;
  if (!r) return null;
  const ms = (v: unknown) => new Date(v as string).getTime();
  if (Number(r.k) === 1)
    return { from: 'outcome', itemId: r.item_id, userId: r.user_id, status: r.status, reason: r.reason, result: canonicalJson(r.result), joinedAt: ms(r.joined_at), admittedAt: r.admitted_at ? ms(r.admitted_at) : null, finishedAt: ms(r.finished_at), source: r.source };
  return { from: Number(r.k) === 2 ? 'orders' : 'coupon_claims', itemId: r.item_id, userId: r.user_id, id: r.id, released: r.status === 'released', reservedUntil: r.reserved_until ? new Date(r.reserved_until).toISOString() : null, at: ms(r.finished_at) };
}
