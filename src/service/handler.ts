import type { z } from 'zod';
import type { Logger } from '../kernel/logger.js';
import type { OwnSale, SaleRequest, SaleResult } from '../db/sales.js';
import type { UnsureCalls } from './unsure-calls.js';
import type { Rejoin } from '../queue/types.js';

/**
 * The handler interface. A handler runs the business action of one admitted ticket and says what
 * happened; the service module settles the ticket with it. Delivery is at least once (a crash
 * re-runs the job), so a handler's effect must be idempotent per ticket.
 *
 * - return `succeeded` (with a result) or `rejected` (a business "no": sold out, limit reached;
 *   not a sign of overload);
 * - throw a `DropError` when the downstream is saturated or unreachable (timeout, 429/503, refused
 *   connection): the job is retried with backoff, the gate backs off, and after the last attempt the
 *   ticket ends `failed`. A downstream that said when to come back (an HTTP `Retry-After`) is
 *   passed on as the error's `retryAfterMs`: the ticket's next attempt waits at least that long
 *   (at most MAX_RETRY_AFTER_MS) without using more attempts, and this process calls the item's
 *   other tickets no sooner either (service/runner.ts);
 * - throw anything else for a fault: retried likewise, then `failed`.
 *
 * Tickets admitted together run as one job, their `handle` calls concurrently; the context's
 * stock and sale calls of concurrent tickets are coalesced into one Redis script or one Postgres
 * transaction each, so a handler is written for one ticket and still runs in batches.
 */
export interface HandlerTicket {
  ticketId: string;
  itemId: string;
  seq: number;
  userId: string;
  payload: Record<string, unknown> | null;
  /** The item's validated config. */
  config: Record<string, unknown>;
  /** 1 on the first run, 2 on the first retry, … (a ticket admitted again after its lease ran out starts at 1 again) */
  attempt: number;
  /**
   * The ticket was admitted before this admission, and what that run did is unknown (its lease ran
   * out — its daemon may have died mid-call —, or it waited in doubt): a downstream may have its
   * first call still in hand. Its calls are not the first ones even at attempt 1.
   */
  admittedBefore?: boolean;
}

export type HandlerOutcome =
  | { status: 'succeeded'; result?: unknown }
  | { status: 'rejected'; reason: string; result?: unknown };

export class DropError extends Error {
  /**
   * @param retryAfterMs how long the downstream asked not to be called again (ms, > 0), when it
   *   said; the runner caps it at MAX_RETRY_AFTER_MS and ignores anything else.
   * @param scope whom the wait is for: the whole item (`item`, a 429 or 503: the downstream says
   *   "not before" to every call) or this ticket alone (`ticket`: a 409 to a retried call says its
   *   key's first call is still being processed, which says nothing of other users' calls).
   */
  constructor(
    readonly reason: string,
    readonly retryAfterMs?: number,
    readonly scope: 'item' | 'ticket' = 'item',
  ) {
    super(reason);
    this.name = 'DropError';
  }
}

/**
 * The longest wait a drop's `retryAfterMs` buys (60 s). A downstream asking for more still gets its
 * calls spaced by a minute: a ticket holds its in-flight slot and its user waits while it waits,
 * and a day-long `Retry-After` (or a date years ahead, from a wrong clock) must not hold a sale.
 */
export const MAX_RETRY_AFTER_MS = 60_000;

/**
 * Thrown when the ticket cannot be decided now and should wait at the head of the line, without
 * using an attempt: Postgres is unreachable, or every unit left is held by a ticket in flight.
 * The ticket goes back to the head (it keeps its place before every waiting ticket).
 */
export class RequeueError extends Error {
  constructor(readonly reason: string) {
    super(reason);
    this.name = 'RequeueError';
  }
}

/**
 * Whether `err` is a DropError (a RequeueError): by its name as well as its class. A deployment's
 * handler module imports the class from the sources, while `npm start` runs the daemon bundled
 * (dist/floodgate.mjs), which holds a copy of its own: `instanceof` took the module's drops for
 * errors (Retry-After ignored, the gate opening up on fast failures instead of backing off).
 */
/** The longest deadline a handler may have (an hour): past 2^31 − 1 ms a timer fires at once. */
export const MAX_DEADLINE_MS = 3_600_000;

/**
 * A handler's deadline for a config: its `deadlineMs` when a positive number, at most
 * MAX_DEADLINE_MS (Infinity too); 10 s without one or for NaN, 0 or less. A timer given Infinity,
 * NaN or more than 2^31 − 1 ms fires after 1 ms: the call was cut off as it began.
 */
export function deadlineOf(spec: { deadlineMs?(config: Record<string, unknown>): number }, config: Record<string, unknown>): number {
  const ms = spec.deadlineMs?.(config);
  return typeof ms === 'number' && ms > 0 ? Math.min(Math.ceil(ms), MAX_DEADLINE_MS) : 10_000;
}

export const isDropError = (err: unknown): err is DropError => err instanceof DropError || (err instanceof Error && err.name === 'DropError' && typeof (err as DropError).reason === 'string');
export const isRequeueError = (err: unknown): err is RequeueError => err instanceof RequeueError || (err instanceof Error && err.name === 'RequeueError' && typeof (err as RequeueError).reason === 'string');

/** An item's Redis stock counter, one ticket at a time (calls are coalesced underneath). */
export interface UnitStock {
  /**
   * Takes one unit for the ticket (idempotent per ticket); `left` counts all shards afterwards.
   * `ended`: the ticket is no longer admitted (another run ended it, or it is back in the line):
   * nothing was taken, and this run must not sell.
   */
  take(itemId: string, seq: number): Promise<{ taken: boolean; ended: boolean; left: number }>;
  /** Gives the ticket's unit back (idempotent); with `upTo`, only while the counter and the units other admitted tickets hold come to fewer than that. */
  refund(itemId: string, seq: number, upTo?: number): Promise<boolean>;
  /** Drops the ticket's unit without giving it back (Postgres had none for it: the counter was over). */
  forfeit(itemId: string, seq: number): Promise<boolean>;
}

export interface HandlerContext {
  /** Aborts when the deadline passes; pass it to every downstream call. */
  signal: AbortSignal;
  deadlineMs: number;
  /**
   * The daemons' clock (ms; Redis's time, which every daemon keeps): for times a handler sends out
   * (a signature's timestamp). A machine's own clock may be off by minutes (a webhook signed with
   * one 6 minutes ahead failed every shop's 5-minute check).
   */
  now(): number;
  log: Logger;
  stock: UnitStock;
  /** Sells through Postgres (batched): orders for seckill, claims for coupon; `decidedAt`: when the call began (the clock's ms). */
  sell(table: 'orders' | 'coupon_claims', req: SaleRequest): Promise<SaleResult & { decidedAt: number }>;
  /**
   * Marks the item sold out (Postgres said so, in a call begun at `decidedAt`): new joins get 410,
   * every waiting ticket ends rejected/sold_out — unless the item's units were set since (a
   * restock after that read): then nothing is cut.
   */
  soldOut(decidedAt: number): Promise<void>;
  /**
   * Asks Postgres whether units are left; when none are and none is reserved, marks the item sold
   * out and answers true (with units reserved the item is held: they may come back).
   */
  confirmSoldOut(): Promise<boolean>;
  /** The ticket's own row in `table` (an earlier run's sale whose answer was lost), `released` if its reservation was released since, `confirmed` if the shop confirmed it; null for none. */
  ownSale(table: 'orders' | 'coupon_claims', ticketRef: string, userId: string): Promise<OwnSale | null>;
  /**
   * The item's downstream calls whose outcome is unknown, per user: a handler that calls out
   * under an idempotency key repeats a user's unsure call for their next ticket (webhook).
   */
  unsure: UnsureCalls;
  /**
   * Runs `fn` once this run's outcome is settled — applied, or applied before under this run's
   * lease — and never if the settle was refused: the ticket ended otherwise meanwhile (a daemon
   * held up past the run's lease while another daemon ran the ticket again and ended it). Given to
   * handlers whose downstream is their own (not seckill or coupon). The webhook settles a user's
   * unsure call so: cleared at its answer, a late answer of a run whose ticket had already ended
   * `failed` elsewhere forgot a call that had made the order, and the user's next ticket called
   * under a new key (a second order, in a review).
   */
  afterSettle?(fn: () => unknown): void;
}

/** A ticket's result from its sale's row, as its handler answers one (`saleResult`; `{ id }` for a handler without one). */
export const saleResultOf = (spec: Pick<HandlerSpec, 'saleResult'>, sale: { id: string; reservedUntil?: string }): Record<string, unknown> => spec.saleResult?.(sale) ?? { id: sale.id };

export interface HandlerSpec {
  name: string;
  /** Validates and normalises the item's `config`. */
  config: z.ZodType<Record<string, unknown>>;
  /**
   * Completes a config as an operator defines the item, before validation: fields made once at
   * creation (a secret) or kept from `previous`, the item's config when it already had this
   * handler. Not called when an item is restored from Postgres.
   */
  fillIn?(input: Record<string, unknown>, previous: Record<string, unknown> | null): Record<string, unknown>;
  /**
   * Rules an operator's new definition must keep on top of `config`, which a stored one (a
   * restore after a Redis loss) is not held to: what was refused only after items were defined
   * with it, and what still runs in them. Issues by path within the config; none: accepted.
   */
  newConfigIssues?(config: Record<string, unknown>): { path: (string | number)[]; message: string }[];
  /** The config as the item view shows it: without secrets. Logs never carry the config. */
  redact?(config: Record<string, unknown>): Record<string, unknown>;
  /** May a user whose earlier ticket ended join again? 'unless_succeeded': not after a success; 'unless_succeeded:N': not after N. */
  rejoin(config: Record<string, unknown>): Rejoin;
  /** Outside workers pull and write back (no in-process run). */
  external: boolean;
  /** Units (stock, coupons) at definition time, for handlers that have them. */
  initialStock?(config: Record<string, unknown>): number;
  /** The Postgres table whose rows are the units sold (reconcile counts them). */
  stockTable?: 'orders' | 'coupon_claims';
  /**
   * A ticket's result from its row in `stockTable` (what `handle` answers for a sale): how a ticket
   * whose sale Postgres holds is told so when its job cannot (service/doubt-resolver.ts; without
   * it, `{ id }` with the row's id).
   */
  saleResult?(sale: { id: string; reservedUntil?: string }): Record<string, unknown>;
  /** Shards of the Redis stock counter (a hot item's units spread over K keys' fields). */
  stockShards?(config: Record<string, unknown>): number;
  /**
   * The handler's downstream bounds its own concurrency — seckill and coupon write through
   * Floodgate's batched Postgres writer (a bounded number of transactions, each for many tickets).
   * In `auto` mode such items are admitted up to `maxInFlight` without the adaptive controller:
   * batching makes latency grow with concurrency while throughput grows too, which a
   * latency-gradient law reads as flooding (measured: it held seckill to 142 orders/s where a
   * cap of 1000 gave 1,410/s).
   */
  selfLimited?: { maxInFlight: number };
  /** How long one run may take (ms). */
  deadlineMs?(config: Record<string, unknown>): number;
  handle?(ticket: HandlerTicket, ctx: HandlerContext): Promise<HandlerOutcome>;
}
