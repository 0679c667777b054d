import type postgres from 'postgres';
import { perKey } from '../kernel/batcher.js';
import { isBadRow, mustWait } from './refusal.js';
import { succeededRefs } from './outcomes.js';
import { begin } from './transactions.js';

/**
 * Writes seckill orders and coupon claims in batches: one call of a Postgres function per batch
 * (drizzle/0009), which locks the `item_stock` rows of the batch's items and decides all its
 * requests in one statement (drizzle/0011, 0012), so Postgres alone decides what was sold: a batch never sells past
 * `total`, a ticket replayed after a crash finds its earlier row, and a user never gets two orders.
 * One round trip per batch matters: under a flood of joins every round trip waits behind the HTTP
 * work on the event loop (the earlier six-statement transaction took 50-200 ms per batch then).
 *
 * A batch Postgres refuses (one row it cannot store, say NUL in a payload: the statement fails
 * whole) is asked again item by item, then that item's ticket by ticket, in order, so only that
 * ticket is refused; a lost connection, or a Postgres that gave the call up for now (a deadlock, a
 * lock or statement timeout), still fails the whole batch (db/refusal.ts), and its tickets wait.
 */
export interface SaleRequest {
  itemId: string;
  userId: string;
  /** The ticket's ref (base64url SHA-256 of its id): Postgres never holds a working ticket id. */
  ticketRef: string;
  payload?: Record<string, unknown> | null;
  /** Coupons only: the item's per-user limit. */
  perUser?: number;
  /** Orders only: reserve for this long (ms) instead of selling outright (drizzle/0005). */
  reserveMs?: number;
}

/**
 * `left` is what Postgres has left after the batch, under the stock lock, and `reserved` how many
 * of the sold units are reservations not yet confirmed: "sold out" is `left = 0` with nothing
 * reserved; `left = 0` with units reserved is "held" (they may come back). `foreign`: the ticket's row exists but belongs to another user (a ticket id issued
 * twice); the sale is refused rather than handing over someone else's order. `void`: the ticket was
 * ended without a sale while in doubt (`decideDoubts`), so no sale may be made for it any more.
 * `released`: the ticket's order was made and then released (its reservation ran out, or the shop
 * released it) before the ticket heard of it — a run again after its daemon died: the replay
 * would have handed back an order that is no longer the buyer's.
 */
export type SaleResult =
  | { kind: 'sold'; id: string; replay: boolean; left: number; reserved: number; reservedUntil?: string; confirmed?: boolean; lapsed?: boolean }
  | { kind: 'sold_out'; left: number; reserved: number }
  | { kind: 'limit_reached'; left: number; reserved: number }
  | { kind: 'foreign'; left: number; reserved: number }
  | { kind: 'void'; left: number; reserved: number }
  | { kind: 'released'; left: number; reserved: number };

/** A ticket whose row Postgres refused; nothing of it was written. */
export type SaleRefused = { kind: 'refused'; error: SaleRefusedError };
export type SaleOutcome = SaleResult | SaleRefused;

/** Why one ticket's sale failed; `permanent` (asking again cannot help) when the row itself is bad. */
export class SaleRefusedError extends Error {
  readonly permanent: boolean;
  constructor(cause: unknown) {
    // Short, as it becomes the ticket's reason; the cause keeps Postgres's words for the log.
    const code = (cause as { code?: unknown } | null)?.code;
    super(typeof code === 'string' ? `sale_refused (${code})` : 'sale_refused', { cause });
    this.name = 'SaleRefusedError';
    this.permanent = isBadRow(cause);
  }
}

type Table = 'orders' | 'coupon_claims';

/**
 * One call for all the batch's items (one transaction: drizzle/0009), per option the call takes
 * (an order's reservation time, a claim's per-user limit; in practice one), decided in one
 * statement over every item (0011, 0012: the stock rows locked first in item id order). A call per
 * item made a batch spread over 200 items 200 commits, and Postgres spent 13x the CPU per order of
 * a sale of one item; the per-item statement inside one call still cost 7x (45-55 ms per 200
 * tickets over 200 items against 6 ms for one item), one statement 7.4-7.6 ms.
 */
export function writeSales(sql: postgres.Sql, table: Table, batch: SaleRequest[]): Promise<SaleOutcome[]> {
  return perKey(
    (r: SaleRequest) => String(table === 'orders' ? (r.reserveMs ?? '') : (r.perUser ?? 1)),
    (_, reqs) => sellIsolated(sql, table, reqs),
  )(batch);
}

/**
 * A batch Postgres refuses is asked again item by item, and an item's refused batch ticket by
 * ticket, in order, so only the bad ticket is refused; a lost connection or a busy Postgres fails
 * the whole batch (asked row by row, a statement timeout would only have timed out more statements).
 */
async function sellIsolated(sql: postgres.Sql, table: Table, reqs: SaleRequest[]): Promise<SaleOutcome[]> {
  try {
    return await sellBatch(sql, table, reqs);
  } catch (err) {
    if (mustWait(err)) throw err;
    if (reqs.length === 1) return [{ kind: 'refused', error: new SaleRefusedError(err) }];
  }
  if (reqs.some((r) => r.itemId !== reqs[0].itemId)) return perKey((r: SaleRequest) => r.itemId, (_, rs) => sellIsolated(sql, table, rs))(reqs);
  // One call per ticket, in the batch's order (first come, first sold); a repeated ticket is asked once.
  const answers = new Map<string, SaleOutcome>();
  for (const r of reqs) {
    if (answers.has(r.ticketRef)) continue;
    try {
      answers.set(r.ticketRef, (await sellBatch(sql, table, [r]))[0]);
    } catch (err) {
      if (mustWait(err)) throw err;
      answers.set(r.ticketRef, { kind: 'refused', error: new SaleRefusedError(err) });
    }
  }
  return reqs.map((r) => answers.get(r.ticketRef)!);
}

async function sellBatch(sql: postgres.Sql, table: Table, reqs: SaleRequest[]): Promise<SaleResult[]> {
  // A ticket twice in one batch (two jobs for one admission) is asked once and answered twice; the
  // same ref from another user (an id issued twice) is never asked: it can only be foreign.
  const key = (itemId: string, ref: string) => `${itemId}\n${ref}`;
  const first = new Map<string, SaleRequest>();
  for (const r of reqs) if (!first.has(key(r.itemId, r.ticketRef))) first.set(key(r.itemId, r.ticketRef), r);
  const asked = [...first.values()];
  const items = asked.map((r) => r.itemId);
  const users = asked.map((r) => r.userId);
  const tickets = asked.map((r) => r.ticketRef);
  const rows =
    table === 'orders'
      ? await sql<Row[]>`select * from floodgate_sell_orders_many(${items}::text[], ${users}::text[], ${tickets}::text[], ${asked.map((r) => (r.payload ? JSON.stringify(r.payload) : null))}::text[], ${asked[0].reserveMs ?? null}::bigint)`
      : await sql<Row[]>`select *, 0 as units_reserved, null as reserved_until from floodgate_sell_claims_many(${items}::text[], ${users}::text[], ${tickets}::text[], ${asked[0].perUser ?? 1}::int)`;
  const byTicket = new Map(rows.map((r) => [key(r.item_id, r.ticket_id), toResult(r)]));
  // A replay hands back the ticket's order whatever its status: one released since (rare: a run
  // again after a crash, past a short reservation) is no sale, and its unit went back already.
  // (One whose reservation ran out and that the sweep has not released yet is still the order
  // here: its ticket waits for the release, sell-unit.ts; one the shop confirmed, paid, is the
  // order for good, whenever its reservation would have run out.)
  const replays = table === 'orders' ? rows.filter((r) => r.kind === 'replay').map((r) => r.id!) : [];
  if (replays.length) {
    // (Lapsed by Postgres's clock, which set reserved_until and whose sweep releases it: a daemon
    // whose machine clock ran ahead sent its buyers back to the head while their orders were live.)
    const now = new Map((await sql`select order_id::text as id, reserved_until, status, coalesce(reserved_until <= now(), false) as lapsed from orders where order_id = any(${replays}::bigint[])`).map((r) => [r.id as string, ownSaleOf(r)]));
    for (const [k, res] of byTicket) {
      const own = res.kind === 'sold' ? now.get(res.id) : undefined;
      if (!own || res.kind !== 'sold') continue;
      if (own.released) byTicket.set(k, { kind: 'released', left: res.left, reserved: res.reserved });
      if (own.confirmed) res.confirmed = true;
      if (own.lapsed) res.lapsed = true;
    }
  }
  return reqs.map((r) => {
    const k = key(r.itemId, r.ticketRef);
    const res = byTicket.get(k)!;
    return first.get(k)!.userId === r.userId ? res : { kind: 'foreign', left: res.left, reserved: res.reserved };
  });
}

type Row = {
  item_id: string;
  ticket_id: string;
  kind: 'sold' | 'replay' | 'limit_reached' | 'sold_out' | 'foreign' | 'void';
  id: string | null;
  units_left: string | number;
  units_reserved: string | number;
  reserved_until: Date | string | null;
};

function toResult(r: Row): SaleResult {
  const left = Number(r.units_left);
  const reserved = Number(r.units_reserved);
  if (r.kind === 'sold' || r.kind === 'replay') {
    const sold: SaleResult = { kind: 'sold', id: r.id!, replay: r.kind === 'replay', left, reserved };
    if (r.reserved_until) sold.reservedUntil = new Date(r.reserved_until).toISOString();
    return sold;
  }
  return { kind: r.kind, left, reserved };
}

/**
 * Postgres's word on some of an item's tickets in doubt (by ticket ref): the sale each one made, if
 * its row is here; a ticket without one is voided in the same transaction (drizzle/0010), so a job
 * of its that stalled and comes to sell later is refused, and the "sold out" or "closed" the ticket
 * is then told stays true. Taken under the item's stock lock (shared), which every sale holds
 * until it commits: a sale in flight when this is asked is waited for and seen, and one that comes
 * after finds the void.
 */
export async function decideDoubts(sql: postgres.Sql, table: Table, itemId: string, refs: string[]): Promise<Map<string, OwnSale & { userId: string }>> {
  return begin(sql, async (tx) => {
    await tx`select 1 from item_stock where item_id = ${itemId} for share`;
    const rows =
      table === 'orders'
        ? await tx`select ticket_id, order_id::text as id, user_id, reserved_until, status, coalesce(reserved_until <= now(), false) as lapsed from orders where item_id = ${itemId} and ticket_id = any(${refs}::text[])`
        : await tx`select ticket_id, claim_id::text as id, user_id, null as reserved_until, 'confirmed' as status, false as lapsed from coupon_claims where item_id = ${itemId} and ticket_id = any(${refs}::text[])`;
    const held = new Set(rows.map((r) => r.ticket_id as string));
    const unsold = refs.filter((r) => !held.has(r));
    if (unsold.length) await tx`insert into voided_tickets (ticket_id, item_id) select t, ${itemId} from unnest(${unsold}::text[]) t on conflict do nothing`;
    return new Map(rows.map((r) => [r.ticket_id as string, { ...ownSaleOf(r), userId: r.user_id as string }]));
  }) as Promise<Map<string, OwnSale & { userId: string }>>;
}

/**
 * The item's latest live sales (orders not released, claims), `limit` of them, by user and ticket
 * ref: the tickets a cut must not end as unsold if Redis has them waiting (queue/definitions.ts; a
 * Redis rollback took back their admission and sale, and a rollback takes back the last seconds or
 * minutes). Read once per cut from the end of the (item, sale) indexes (drizzle/0022): an item of
 * 1.2 million claims, read whole, held the daemon's event loop and ~1.3 GB (a review). The item is
 * matched as a range and the rows ordered by item too, so Postgres cannot take them from the
 * primary key instead: with `item_id =` it did whenever the item held a large share of the table,
 * walking back through every newer row of other items (a 1.2 M-claim coupon item behind 1.5 M newer
 * claims: 540–900 ms; 13 ms from its index).
 */
export async function saleRefs(sql: postgres.Sql | postgres.TransactionSql, table: Table, itemId: string, limit: number): Promise<{ userId: string; ref: string }[]> {
  const rows =
    table === 'orders'
      ? await sql`select user_id, ticket_id from orders where item_id >= ${itemId} and item_id <= ${itemId} and status <> 'released'
          order by item_id desc, order_id desc limit ${limit}`
      : await sql`select user_id, ticket_id from coupon_claims where item_id >= ${itemId} and item_id <= ${itemId}
          order by item_id desc, claim_id desc limit ${limit}`;
  return rows.map((r) => ({ userId: r.user_id as string, ref: r.ticket_id as string }));
}

/**
 * What a cut looks at (queue/definitions.ts): the item's latest `limit` succeeded ends and, for a
 * handler that sells through `table`, its latest `limit` live sales. In one transaction whose
 * statements Postgres ends after `ms`: the caller gives the read up at its own bound, and the
 * statement no longer runs on after it, holding a connection the sales need. Postgres ending it
 * is the read being slow, not Postgres being away: it fails as a plain Error (its code, 57014,
 * would read as Postgres busy, and a sell-out would wait for a look that is always slow).
 */
export async function buyersOf(sql: postgres.Sql, itemId: string, table: Table | null, limit: number, ms: number): Promise<{ userId: string; ref: string }[]> {
  try {
    return await begin(sql, async (tx) => {
      await tx`select set_config('statement_timeout', ${String(ms)}, true)`;
      const [told, sold] = await Promise.all([succeededRefs(tx, itemId, limit), table ? saleRefs(tx, table, itemId, limit) : []]);
      return [...told, ...sold];
    });
  } catch (err) {
    if ((err as { code?: unknown } | null)?.code === '57014') throw new Error(`sales read took over ${ms} ms (cancelled by Postgres)`);
    throw err;
  }
}

/**
 * The ticket's own sale, if Postgres holds one (the same user's; `released` if its reservation was
 * released since): what a run that finds no unit in Redis answers when an earlier run of the
 * ticket sold (its answer lost).
 */
export async function ownSale(sql: postgres.Sql, table: Table, itemId: string, ref: string, userId: string): Promise<OwnSale | null> {
  const [row] =
    table === 'orders'
      ? await sql`select order_id::text as id, reserved_until, status, coalesce(reserved_until <= now(), false) as lapsed from orders where item_id = ${itemId} and ticket_id = ${ref} and user_id = ${userId}`
      : await sql`select claim_id::text as id, null as reserved_until, 'confirmed' as status, false as lapsed from coupon_claims where item_id = ${itemId} and ticket_id = ${ref} and user_id = ${userId}`;
  return row ? ownSaleOf(row) : null;
}

/**
 * A ticket's sale as Postgres holds it: `reservedUntil` for an order sold with a reservation,
 * `released` once it was released, `confirmed` once the shop confirmed (paid) one with a
 * reservation — whose `reservedUntil` then no longer says anything will happen to it — and
 * `lapsed` for one still reserved whose reservedUntil has passed by Postgres's clock (the sweep
 * releases it shortly).
 */
export type OwnSale = { id: string; reservedUntil?: string; released?: boolean; confirmed?: boolean; lapsed?: boolean };

function ownSaleOf(r: postgres.Row): OwnSale {
  const sale: OwnSale = { id: r.id as string };
  if (r.reserved_until) sale.reservedUntil = new Date(r.reserved_until).toISOString();
  if (r.status === 'released') sale.released = true;
  if (r.status === 'confirmed' && r.reserved_until) sale.confirmed = true;
  if (r.status === 'reserved' && r.lapsed) sale.lapsed = true;
  return sale;
}

/**
 * Units Postgres has left for an item (total − sold) and how many sold units are reservations not
 * yet confirmed, or null for an item without a stock row.
 */
export async function unitsLeft(sql: postgres.Sql, itemId: string): Promise<{ left: number; reserved: number } | null> {
  const [row] = await sql`select total - sold as left, reserved from item_stock where item_id = ${itemId}`;
  return row ? { left: Number(row.left), reserved: Number(row.reserved) } : null;
}

/**
 * Creates or updates an item's stock row; `total` is the handler's stock or coupon total, kept as
 * the row's `target`: the row's own total follows it and never goes under what is sold
 * (drizzle/0013), so a stock lowered below what is sold or reserved sells nothing more, and units
 * released above it are not sold again.
 */
export async function defineStock(sql: postgres.Sql, itemId: string, total: number): Promise<void> {
  await sql`
    insert into item_stock (item_id, total, sold, target) values (${itemId}, ${total}, 0, ${total})
    on conflict (item_id) do update set target = excluded.target, total = greatest(excluded.total, item_stock.sold)`;
}

/**
 * Recounts `sold` (live rows: released orders do not count) and `reserved` from the rows
 * themselves: the basis of reconcile. The stock row is locked first, in a statement of its own: a
 * single `UPDATE … SET sold = (SELECT count(*) …)` evaluates its count under the snapshot taken
 * when it started, so one that waited for a sale's lock wrote the count from before that sale —
 * `sold` went down, and the next batch oversold. Sales, confirms and releases take the same lock
 * first, so nothing changes between the lock and the count.
 */
export async function recountStock(sql: postgres.Sql, table: Table, itemId: string): Promise<{ total: number; sold: number; reserved: number } | null> {
  return begin(sql, async (tx) => {
    const [locked] = await tx`select 1 from item_stock where item_id = ${itemId} for update`;
    if (!locked) return null;
    const [row] =
      table === 'orders'
        ? await tx`
            update item_stock set
              sold = (select count(*) from orders where item_id = ${itemId} and status <> 'released'),
              reserved = (select count(*) from orders where item_id = ${itemId} and status = 'reserved')
            where item_id = ${itemId} returning total, sold, reserved`
        : await tx`
            update item_stock set sold = (select count(*) from coupon_claims where item_id = ${itemId})
            where item_id = ${itemId} returning total, sold, reserved`;
    return { total: Number(row.total), sold: Number(row.sold), reserved: Number(row.reserved) };
  }) as Promise<{ total: number; sold: number; reserved: number } | null>;
}
