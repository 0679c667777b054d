import { setMaxListeners } from 'node:events';
import { Backoffs, DelayedError, type Job } from 'bullmq';
import type { Logger } from '../kernel/logger.js';
import type { SettleInput } from '../queue/line.js';
import { HeldEndsUnread } from '../queue/admissions.js';
import type { CachedItem } from '../queue/item-cache.js';
import type { LeaseHeld } from '../queue/types.js';
import { jsonIssues, MAX_JSON_DEPTH, UNSAFE_NUMBER } from '../kernel/json-issues.js';
import { ticketRef } from '../kernel/ticket-ref.js';
import { deadlineOf, DropError, isDropError, isRequeueError, MAX_RETRY_AFTER_MS, saleResultOf, type HandlerContext, type HandlerOutcome, type HandlerSpec } from './handler.js';
import { jobGroups, type JobGroup, type JobTicket, type QueuedJob } from './jobs.js';
import { builtinHandlers, type HandlerRegistry } from './registry.js';
import { unanswered, type DownstreamHealth } from './downstream-health.js';

/** One call of a handler, as the gate sees it: how long the downstream took, and whether it dropped. */
export interface Sample {
  itemId: string;
  /** When the call started (clock ms): probe samples are those started after a probe began. */
  startedAt: number;
  latencyMs: number;
  result: 'ok' | 'rejected' | 'drop' | 'error';
  /**
   * A drop whose ticket went back to the line while its downstream was away, other than a timeout:
   * no measure of the downstream's capacity (the gate's controller leaves it out; a refused or cut
   * connection is not congestion, and its limit cut to 1 by a 20 s outage held every probe to one
   * ticket and climbed back from there). A timeout is kept: a service collapsing under load.
   */
  sentBack?: true;
}

/** A ticket's outcome as the runner hands it to the settler (always with the owner override). */
export type Settlement = SettleInput & { itemId: string; seq: number };

export interface RunnerDeps {
  item(itemId: string, opts?: { fresh?: boolean }): Promise<CachedItem | null>;
  handlers: HandlerRegistry;
  log: Logger;
  attempts: number;
  /** Settles one ticket (coalesced with others into one Redis call); returns the settle code. */
  settle(s: Settlement): Promise<number>;
  /** The job-independent part of every handler context (stock, sales, sold-out). */
  context(itemId: string): Pick<HandlerContext, 'stock' | 'sell' | 'soldOut' | 'confirmSoldOut' | 'ownSale' | 'unsure'>;
  onSample(s: Sample): void;
  now(): number;
  onSettled(itemId: string, status: string): void;
  /** How long a job's tickets' leases last while it waits out a retry backoff (jobs.ts, jobLeaseMs). */
  leaseMs(deadlineMs: number): number;
  /** How long they last while it runs, renewed every third of it (jobs.ts, RUN_LEASE_MS). */
  runLeaseMs: number;
  /** Extends the leases of a job's tickets to `until` (ms); resolves with, per ticket, whether it was still theirs. */
  renew(itemId: string, tickets: { seq: number; leaseId: string }[], until: number): Promise<LeaseHeld[]>;
  /** Of a job's tickets, those whose end the outcome ledger does not hold; the others ended with it (admissions.dropHeldEnds). */
  dropHeldEnds?(itemId: string, tickets: JobTicket[]): Promise<JobTicket[]>;
  /** Whether each item's own downstream answers (handlers that sell through no Postgres table): told of every call. */
  downstream?: DownstreamHealth;
}

/** Thrown to make BullMQ retry a job whose remaining tickets dropped or faulted. */
class RetryLater extends Error {}

/** How long a job holds tickets whose ledger look failed on an item rolled back (HeldEndsUnread) before it asks again. */
const LEDGER_UNREAD_WAIT_MS = 2000;

/**
 * How one ticket's run ended: settled, or to run again no sooner than `waitMs` (0: the backoff
 * alone); `own`: a wait asked for this ticket's call alone (a DropError of scope `ticket`).
 */
type TicketRun = { settled: true } | { settled: false; waitMs: number; own: boolean };

/** One item's tickets of a job after a run: those to run again, whether they were called, and what they ask. */
interface GroupRun {
  /** To run again: those called (or held by a pause, `called` false), then those not due yet (`waiting`). */
  again: JobTicket[];
  /** Tickets of `again` not run now, their own wait not over (JobTicket.notBefore): left as they are. */
  waiting?: Set<JobTicket>;
  /** Tickets of `again` that asked for a wait of their own (ms), not the item's. */
  own?: Map<JobTicket, number>;
  /** False when the item's pause held the tickets back: the downstream was not called. */
  called: boolean;
  /** The longest wait before their next run that a downstream asked for, or the pause left when held (ms; 0: none). */
  waitMs: number;
  deadlineMs: number;
  fault?: unknown;
}

/** How long past its deadline a deployment's own handler may run before its call is given up (its ctx.signal aborts at the deadline). */
export const HANDLER_GRACE_MS = 1000;
/** The largest result a handler's outcome keeps (as a webhook's answer: 64 KiB of JSON, as UTF-8). */
const MAX_RESULT_BYTES = 64 * 1024;
/** A job taken this much or less before its `notBefore` runs (BullMQ's own promotion is not to the ms). */
const EARLY_MS = 50;

/**
 * A deployment's handler call, given up `ms` after it began: one that ignored its signal and never
 * settled (a driver without timeouts) held its ticket admitted for good, its lease renewed while
 * the job ran, and its in-flight slot with it. Given up, it counts as a drop (`timeout`): retried
 * while attempts remain, then `failed`, as a webhook's call that timed out. (The built-in handlers
 * keep their own deadlines: a sale's commit is Postgres's to decide, not a timer's.)
 */
function givenUpAfter<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new DropError('timeout')), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** A reason code as the contract keeps one (1–128 characters of well-formed text without NUL). */
const isReason = (r: unknown): r is string => typeof r === 'string' && r.length >= 1 && r.length <= 128 && jsonIssues(r, MAX_JSON_DEPTH, 1).length === 0;
/**
 * A failure's reason taken from what a module threw: a code (`downstream_busy`, `http_503`,
 * `stock.locked`), not prose. A thrown error's text went to its user and the ledger as it was
 * (a review: `connect ECONNREFUSED 10.0.0.5:5432 user=shop password=hunter2`).
 */
const isCode = (r: unknown): r is string => typeof r === 'string' && /^[A-Za-z0-9_.:-]{1,128}$/.test(r);
/**
 * Whether a result (a JSON round trip of what the handler gave) can be stored: no NUL or lone
 * surrogate in any string, which Postgres's jsonb refuses. Any depth JSON.stringify took (a result
 * nested a few thousand levels is kept), any number (it is the handler's own, not one parsed).
 */
const storableResult = (v: unknown) => jsonIssues(v, Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER).every((i) => i.message === UNSAFE_NUMBER);

/**
 * A handler's answer as the contract can keep it: `succeeded`, or `rejected` with a reason code
 * (a string of 1–128 characters, as an outside worker's write-back); null for anything else (a
 * string, `failed`, a numeric reason), which ends the ticket `failed` / `invalid_result` rather
 * than telling its user a `rejected` the handler never said. A result that cannot be stored (not
 * JSON — a BigInt, a cycle, nesting too deep to serialise —, NUL or a lone surrogate, over 64 KiB)
 * is left out as a webhook's answer is (`dropped`), and the outcome stands (a sale made is
 * `succeeded`, whatever its result): kept, its ledger row was refused and the ticket's outcome
 * lost once its state left Redis.
 */
export function keptOutcome(answer: unknown): { outcome: HandlerOutcome; dropped: boolean } | null {
  if (typeof answer !== 'object' || answer === null) return null;
  const { status, reason, result } = answer as Record<string, unknown>;
  if (status !== 'succeeded' && status !== 'rejected') return null;
  if (status === 'rejected' && !isReason(reason)) return null;
  let kept: unknown;
  if (result !== undefined) {
    try {
      const text = JSON.stringify(result);
      kept = text !== undefined && Buffer.byteLength(text) <= MAX_RESULT_BYTES ? JSON.parse(text) : undefined;
    } catch {
      kept = undefined; // a BigInt, a cycle
    }
    if (kept !== undefined && !storableResult(kept)) kept = undefined;
  }
  const dropped = result !== undefined && kept === undefined;
  const withResult = kept === undefined ? {} : { result: kept };
  return { outcome: status === 'succeeded' ? { status, ...withResult } : { status, reason: reason as string, ...withResult }, dropped };
}

/** What a drop asks to wait (ms): its `retryAfterMs` capped at MAX_RETRY_AFTER_MS; 0 for none or nonsense. */
function askedWait(err: DropError): number {
  const ms = err.retryAfterMs;
  return typeof ms === 'number' && Number.isFinite(ms) && ms > 0 ? Math.min(Math.ceil(ms), MAX_RETRY_AFTER_MS) : 0;
}

/**
 * Runs one job: for each item in it, the item's handler for each of its tickets, concurrently,
 * under the item's deadline, each ticket settled as soon as its outcome is known (settles of many
 * tickets are coalesced into one Redis call). A ticket that dropped or faulted while attempts
 * remain is kept in the job, the others are taken out of it, and the job is thrown back so BullMQ
 * retries it with backoff (the ticket stays admitted and keeps its in-flight slot meanwhile);
 * after the last attempt the ticket ends `failed`. Settling uses the owner override: the job, not
 * a lease, owns its tickets.
 *
 * A downstream that said when to come back (a drop's `retryAfterMs`, an HTTP Retry-After) gets
 * what it asked, which BullMQ's backoff cannot give: its delay is a function of the attempt alone,
 * fixed for the queue (a custom strategy is consulted only for jobs queued with a backoff type
 * BullMQ does not know, which a daemon of an earlier version, sharing the queue during a rolling
 * upgrade, could not retry at all). So such a job is moved to BullMQ's delayed set by the runner
 * itself (Job.moveToDelayed, then DelayedError, which the worker takes as "moved, not failed"),
 * for the longest of what its tickets asked and the backoff BullMQ would have given them. That
 * move does not count an attempt in BullMQ, so the job's data counts it per ticket (`tries`):
 * no ticket gets more calls than FLOODGATE_JOB_ATTEMPTS.
 *
 * The item's other tickets wait as well: a downstream that says "not before" to one call says it
 * to all, and tickets admitted meanwhile would otherwise each spend an attempt on a call it had
 * asked not to get. A job that finds its item paused calls nobody and is delayed to the pause's
 * end without using an attempt (a ticket at most FLOODGATE_JOB_ATTEMPTS times, so a downstream
 * that keeps asking cannot hold it for good). The pause is this process's: another daemon learns
 * it from its own first drop. Nothing here fights the gate: the drop that asked is sampled as a
 * drop once, like any other (the auto gate cuts its limit on it), held tickets add no samples, and
 * while they wait they keep their in-flight slots, so admissions stop at the gate's limit rather
 * than pile up calls for the pause's end.
 */
export function createRunner(deps: RunnerDeps) {
  const { log } = deps;
  /** Items whose downstream asked for a pause, until when (clock ms). */
  const pausedUntil = new Map<string, number>();

  function pause(itemId: string, ms: number) {
    const until = deps.now() + ms;
    const was = pauseLeft(itemId);
    if (deps.now() + was >= until) return;
    pausedUntil.set(itemId, until);
    if (was === 0) log.info({ itemId, ms }, 'downstream asked for a pause (Retry-After); the item\'s calls wait it out');
  }

  function pauseLeft(itemId: string): number {
    const until = pausedUntil.get(itemId);
    if (until === undefined) return 0;
    const left = until - deps.now();
    if (left > 0) return left;
    pausedUntil.delete(itemId);
    return 0;
  }

  async function settle(itemId: string, t: JobTicket, input: Omit<SettleInput, 'leaseId' | 'force'>): Promise<number> {
    const code = await deps.settle({ ...input, itemId, seq: t.seq, leaseId: t.leaseId, force: true, ...(t.record !== undefined && { record: t.record }) });
    // -2: the lease ran out and the ticket went back to the line (it will run again,
    // idempotently); -1: the item was re-created. Nothing left to settle either way.
    if (code < 0) log.warn({ itemId, seq: t.seq, code: code === -1 ? 'ticket_not_found' : 'lease_lost' }, 'job outcome not settled');
    // (2: settled before, by a run of the ticket another daemon's job made when this one's lease ran out: counted there.)
    else if (code === 1) deps.onSettled(itemId, input.retry ? 'retry' : input.status);
    return code;
  }

  /** Runs the handler for one ticket: settled, or to be retried (after what its downstream asked). */
  async function runTicket(spec: HandlerSpec, itemId: string, t: JobTicket, config: Record<string, unknown>, attempt: number, ctx: HandlerContext, admittedBefore: boolean): Promise<TicketRun> {
    const started = performance.now();
    const startedAt = deps.now();
    const builtin = builtinHandlers.includes(spec);
    // A module's sales through ctx.sell, followed (see soldBefore below).
    const sells = builtin ? null : { tables: new Set<'orders' | 'coupon_claims'>(), pending: 0 };
    // What the handler asked to be done once its outcome is settled (ctx.afterSettle, for handlers
    // whose downstream is their own): not when the settle was refused (the ticket ended otherwise
    // while this run was held up).
    const after: (() => unknown)[] = [];
    const runCtx: HandlerContext =
      !sells && spec.stockTable
        ? ctx
        : {
            ...ctx,
            ...(!spec.stockTable && { afterSettle: (fn: () => unknown) => void after.push(fn) }),
            ...(sells && {
              sell: async (table: 'orders' | 'coupon_claims', req: Parameters<HandlerContext['sell']>[1]) => {
                sells.tables.add(table);
                sells.pending++;
                try {
                  return await ctx.sell(table, req);
                } finally {
                  sells.pending--;
                }
              },
            }),
          };
    const ended = async (input: Omit<SettleInput, 'leaseId' | 'force'>) => {
      const code = await settle(itemId, t, input);
      if (code > 0 && !input.retry)
        for (const fn of after) {
          // (A module's that throws must not fail the run: its ticket is settled, and run again it would call again.)
          await Promise.resolve()
            .then(fn)
            .catch((err: unknown) => log.warn({ itemId, seq: t.seq, err: String(err) }, 'a handler\'s after-settle step failed'));
        }
    };
    // Told how each call went: a handler whose downstream is its own (not one that sells through Postgres, which has its own health).
    const health = spec.stockTable ? undefined : deps.downstream;
    let outcome: HandlerOutcome;
    try {
      const call = spec.handle!({ ticketId: t.ticketId, itemId, seq: t.seq, userId: t.userId, payload: t.payload, config, attempt, ...(admittedBefore && { admittedBefore }) }, runCtx);
      // The built-in handlers' answers are the contract's already (and their results kept whole: no round trip per order).
      const kept = builtin ? { outcome: await call, dropped: false } : keptOutcome(await givenUpAfter(call, ctx.deadlineMs + HANDLER_GRACE_MS));
      if (!kept) {
        deps.onSample({ itemId, startedAt, latencyMs: performance.now() - started, result: 'error' });
        log.warn({ itemId, seq: t.seq, handler: spec.name }, 'handler answered no outcome the contract knows (succeeded, or rejected with a reason of 1-128 characters): ticket failed');
        await ended({ status: 'failed', reason: 'invalid_result' });
        return { settled: true };
      }
      if (kept.dropped) log.warn({ itemId, seq: t.seq, handler: spec.name }, 'handler result not kept (not JSON, NUL, lone surrogate, or over 64 KiB); outcome stored without it');
      outcome = kept.outcome;
      health?.answered(itemId, t.seq);
      deps.onSample({ itemId, startedAt, latencyMs: performance.now() - started, result: outcome.status === 'succeeded' ? 'ok' : 'rejected' });
    } catch (err) {
      if (isRequeueError(err)) {
        // Undecidable now (Postgres unreachable, units held by tickets in flight): back to the head.
        log.debug({ itemId, seq: t.seq, reason: err.reason }, 'ticket requeued');
        await ended({ status: 'failed', reason: err.reason, retry: true });
        return { settled: true };
      }
      const drop = isDropError(err);
      const sample: Sample = { itemId, startedAt, latencyMs: performance.now() - started, result: drop ? 'drop' : 'error' };
      // Asked on the last attempt too: the item's other tickets wait it out (not for a wait asked
      // for this ticket's call alone: one user's 409 "still processing" held every other user's
      // call 20 s, a review).
      const waitMs = drop ? askedWait(err) : 0;
      const own = drop && (err as DropError).scope === 'ticket';
      if (waitMs && !own) pause(itemId, waitMs);
      // (Whatever was thrown: `throw undefined` read as an object failed here, and its ticket was never settled.)
      const permanent = (err as { permanent?: boolean } | null | undefined)?.permanent === true;
      const noAnswer = drop && unanswered(err);
      if (health) {
        // (A refusal that fails the ticket at once, a webhook's 4xx, is an answer too.)
        if (noAnswer) health.dropped(itemId, t.seq, err.reason);
        else if (drop || permanent) health.answered(itemId, t.seq);
        // While its downstream is away (or about to be, on the ticket's last attempt), a call not
        // answered spends no attempt: the ticket goes back to the head of the line, to run when
        // calls are answered again. A webhook's call that may have reached its service was kept
        // (unsure-calls.ts): its next run repeats it under the same key.
        // (Not a module's run that sold: its sale decides it, below or at its next run.)
        if (noAnswer && !sells?.tables.size && (health.away(itemId) || (attempt >= deps.attempts && health.failing(itemId))) && health.sendBack(itemId, t.seq)) {
          // (A timeout is the controller's all the same: a service that collapses under load times out.)
          deps.onSample(err.reason === 'timeout' ? sample : { ...sample, sentBack: true });
          log.debug({ itemId, seq: t.seq, attempt, reason: err.reason }, 'call not answered while the downstream is away: ticket back to the head of the line');
          await ended({ status: 'failed', reason: 'downstream_away', retry: true });
          return { settled: true };
        }
      }
      deps.onSample(sample);
      if (!permanent && attempt < deps.attempts) {
        log.debug({ itemId, seq: t.seq, attempt, waitMs, err: String(err) }, 'handler attempt failed; retrying');
        return { settled: false, waitMs, own };
      }
      // Voided in Postgres: a cancel the ledger holds (a Redis rollback brought the ticket back), or
      // an end without a sale the doubt resolver made. That end, not `failed`: its user was told it.
      if (permanent && (err as Error).message === 'ticket_voided' && deps.dropHeldEnds) {
        const live = await deps.dropHeldEnds(itemId, [t]).catch(() => [t]);
        if (!live.length) return { settled: true };
      }
      if (sells?.tables.size) {
        const sold = await soldBefore(spec, itemId, t, sells, runCtx);
        if (sold === 'undecided') {
          log.warn({ itemId, seq: t.seq, attempt, err: String(err) }, 'handler failed after a sale it began: back to the line, to be decided by its next run');
          await ended({ status: 'failed', reason: 'sale_undecided', retry: true });
          return { settled: true };
        }
        if (sold) {
          log.warn({ itemId, seq: t.seq, attempt, err: String(err) }, 'handler failed after its sale was made: the ticket succeeded with it');
          await ended({ status: 'succeeded', result: sold });
          return { settled: true };
        }
      }
      log.warn({ itemId, seq: t.seq, attempt, err: String(err) }, 'handler failed');
      // A module's own drop or permanent error may say anything (an error's text names hosts, users,
      // passwords): kept as the reason only if it reads as a code.
      const said = drop ? err.reason : permanent ? (err as Error).message : 'handler_error';
      // (The built-in handlers' reasons are the contract's, `sale_refused (22P05)` among them.)
      await ended({ status: 'failed', reason: (builtin ? isReason(said) : isCode(said)) ? said : drop ? 'downstream_drop' : 'handler_error' });
      return { settled: true };
    }
    await ended(outcome.status === 'succeeded' ? { status: 'succeeded', result: outcome.result } : { status: 'rejected', reason: outcome.reason, result: outcome.result });
    return { settled: true };
  }

  /**
   * Whether a module's run that failed (threw, or was given up at its deadline) had made its sale:
   * it called ctx.sell, and Postgres may hold the order or claim, whose user must not be told
   * `failed` (a review: a copy of seckill with a 300 ms deadline, given up while a row lock held its
   * sale, told its buyer `failed`/`timeout` next to a committed order). The sale's result as the
   * doubt resolver tells it (the spec's saleResult, or `{ id }`) if Postgres holds a live one; null
   * if it holds none; `undecided` while the sale is still under way or Postgres cannot say: the
   * ticket goes back to the line and its next run's sale finds the row (sales are per ticket).
   */
  async function soldBefore(spec: HandlerSpec, itemId: string, t: JobTicket, sells: { tables: Set<'orders' | 'coupon_claims'>; pending: number }, ctx: HandlerContext): Promise<Record<string, unknown> | null | 'undecided'> {
    if (sells.pending > 0) return 'undecided';
    try {
      for (const table of sells.tables) {
        const sale = await ctx.ownSale(table, ticketRef(t.ticketId), t.userId);
        // (A reservation past its time is the sweep's to release any moment: undecided, as a sale's run holds it.)
        if (sale?.lapsed) return 'undecided';
        if (sale && !sale.released) return saleResultOf(spec, sale);
      }
      return null;
    } catch {
      return 'undecided';
    }
  }

  /**
   * One item's tickets of a job: those to retry, and the fault to report if one faulted.
   * `attemptsMade`: the job's attempts BullMQ counted (a ticket's attempt adds its own `tries`).
   */
  /**
   * `stalled`: BullMQ took the job back from a worker that stopped renewing its lock (a daemon
   * killed mid-run): every ticket in it may have been called already, at the same attempt.
   */
  async function runGroup(spec: HandlerSpec | undefined, g: JobGroup, attemptsMade: number, stalled: boolean): Promise<GroupRun> {
    const { itemId } = g;
    let { tickets } = g;
    const none: GroupRun = { again: [], called: true, waitMs: 0, deadlineMs: 0 };
    let item = await deps.item(itemId);
    // This process's view is older than the definition the tickets were admitted under (an
    // operator's PUT through another daemon, within the cache's time): read afresh, or they ran
    // under the old config (the perUser, reservation or URL the operator had just changed).
    // (Not the same version either way: after a Redis loss versions start again at 1.)
    if (item && g.version !== undefined && item.snap.version !== g.version) item = await deps.item(itemId, { fresh: true });
    if (!item) {
      log.warn({ itemId, tickets: tickets.length }, 'job for an item that no longer exists');
      return none;
    }
    if (!spec?.handle) {
      await Promise.all(tickets.map((t) => settle(itemId, t, { status: 'failed', reason: 'no_handler' })));
      return none;
    }
    const config = item.snap.def.config;
    const deadlineMs = deadlineOf(spec, config);
    // The tickets' leases live as long as this process runs the job (jobs.ts, RUN_LEASE_MS); a
    // renewal that fails (Redis unreachable) is harmless: the lease runs out and the ticket is
    // offered again. A ticket no longer ours came back to the line and was offered again (a job
    // of a dead daemon that BullMQ handed over late; a job queued after its dispatch lease ran
    // out): it runs under its new lease, in its new job, not here.
    const held = await deps.renew(itemId, tickets, deps.now() + deps.runLeaseMs).catch(() => null);
    // Admitted before (its lease ran out, or it waited in doubt), or run before in this job (stalled): what that run did is unknown.
    const before = new Set(held ? tickets.filter((_, i) => stalled || held[i] === 2).map((t) => t.seq) : stalled ? tickets.map((t) => t.seq) : []);
    if (held) {
      const ours = tickets.filter((_, i) => held[i]);
      if (!ours.length) {
        log.info({ itemId, tickets: tickets.length }, 'job skipped: its tickets were offered again');
        return none;
      }
      if (ours.length < tickets.length) log.info({ itemId, tickets: tickets.length - ours.length }, 'tickets left out of the job: they were offered again');
      tickets = ours;
    }
    // Ended before a Redis rollback took the end back (a cancel its user was told of, an answer the
    // ledger holds): ended again with the ledger's outcome, not run. A handler that sells through
    // Postgres needs no look: its sale is per ticket there (a sold one answers its order, a
    // cancelled one is voided).
    if (!spec.stockTable && deps.dropHeldEnds) {
      const live = await deps.dropHeldEnds(itemId, tickets).catch((err: unknown) => {
        if (err instanceof HeldEndsUnread) return null;
        throw err;
      });
      if (live === null) {
        // Unchecked on an item rolled back: held a while (not called), then run as before, their
        // calls carrying their Idempotency-Key as ever.
        if (tickets.every((t) => (t.held ?? 0) < deps.attempts)) {
          log.warn({ itemId, tickets: tickets.length }, 'tickets held: the outcome ledger could not be read for an item rolled back');
          return { again: tickets, called: false, waitMs: LEDGER_UNREAD_WAIT_MS, deadlineMs };
        }
      } else {
        if (live.length < tickets.length) log.warn({ itemId, ended: tickets.length - live.length }, 'tickets whose end the outcome ledger holds ended with it, not run again (a Redis rollback took their end)');
        if (!live.length) return none;
        tickets = live;
      }
    }
    const paused = pauseLeft(itemId);
    if (paused > 0 && tickets.every((t) => (t.held ?? 0) < deps.attempts)) {
      log.debug({ itemId, tickets: tickets.length, waitMs: paused }, 'tickets wait out their downstream\'s pause');
      return { again: tickets, called: false, waitMs: paused, deadlineMs };
    }
    // A ticket whose own wait is not over (a 409's Retry-After to its retried call) is not called
    // now, and the others are: the job runs again when the first of them is due.
    const now = deps.now();
    const waiting = new Set(tickets.filter((t) => t.notBefore !== undefined && t.notBefore - now > EARLY_MS));
    if (waiting.size) {
      tickets = tickets.filter((t) => !waiting.has(t));
      if (!tickets.length) return { again: [...waiting], waiting, called: true, waitMs: 0, deadlineMs };
    }
    const ac = new AbortController();
    // One listener per ticket's call is expected (a webhook's call listens for the deadline): a
    // job of more than ten tickets made Node print a MaxListenersExceededWarning to stderr, a
    // leak that was not one. The signal lives for this run only.
    setMaxListeners(0, ac.signal);
    const timer = setTimeout(() => ac.abort(), deadlineMs);
    // (Those waiting for their own call's time too: theirs must not run out during the others' run.)
    const renew = () => void deps.renew(itemId, waiting.size ? [...tickets, ...waiting] : tickets, deps.now() + deps.runLeaseMs).catch(() => {});
    const renewal = setInterval(renew, deps.runLeaseMs / 3);
    const ctx: HandlerContext = { signal: ac.signal, deadlineMs, now: deps.now, log: log.child({ itemId }), ...deps.context(itemId) };
    let results: PromiseSettledResult<TicketRun>[];
    try {
      results = await Promise.allSettled(tickets.map((t) => runTicket(spec, itemId, t, config, attemptsMade + (t.tries ?? 0) + 1, ctx, before.has(t.seq))));
    } finally {
      clearTimeout(timer);
      clearInterval(renewal);
    }
    // A ticket whose settle failed (Redis unreachable) is retried like one that dropped.
    const again = tickets.filter((_, i) => results[i].status === 'rejected' || !(results[i] as PromiseFulfilledResult<TicketRun>).value.settled);
    const runs = results.map((r) => (r.status === 'fulfilled' && !r.value.settled ? r.value : null));
    const waitMs = Math.max(0, ...runs.map((r) => (r && !r.own ? r.waitMs : 0)));
    const own = new Map(tickets.flatMap((t, i) => (runs[i]?.own && runs[i]!.waitMs > 0 ? [[t, runs[i]!.waitMs] as const] : [])));
    const fault = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    return { again: [...again, ...waiting], ...(waiting.size && { waiting }), ...(own.size && { own }), called: true, waitMs, deadlineMs, fault: fault?.reason };
  }

  /** The backoff BullMQ gives a job after `attempt` (its own computation, from the job's options). */
  async function backoffAfter(job: Job<QueuedJob>, attempt: number): Promise<number> {
    const backoff = job.opts.backoff === undefined ? undefined : Backoffs.normalize(job.opts.backoff);
    if (!backoff) return 0;
    return Number(await Backoffs.calculate(backoff, attempt, new RetryLater('retry-after'), job)) || 0;
  }

  return async function run(job: Job<QueuedJob>, token?: string): Promise<void> {
    // Taken before its time by a worker whose machine clock runs ahead of the daemon that delayed
    // it (BullMQ's delays are machine-clock times): delayed again, in this worker's own terms, by
    // what is left on the daemons' clock. No attempt is counted.
    const notBefore = 'notBefore' in job.data ? job.data.notBefore : undefined;
    if (notBefore !== undefined && notBefore - deps.now() > EARLY_MS) {
      await job.moveToDelayed(Date.now() + (notBefore - deps.now()), token);
      throw new DelayedError();
    }
    const groups = jobGroups(job.data);
    const spec = deps.handlers.get(job.data.handler);
    const stalled = (job.stalledCounter ?? 0) > 0;
    const outs = await Promise.all(groups.map((g) => runGroup(spec, g, job.attemptsMade, stalled)));
    const left = groups.map((g, i) => ({ itemId: g.itemId, version: g.version, out: outs[i] })).filter((g) => g.out.again.length);
    if (!left.length) return;
    const count = (gs: JobGroup[]) => gs.reduce((n, g) => n + g.tickets.length, 0);
    const waitMs = Math.max(...left.map((g) => g.out.waitMs));
    // BullMQ's own retry (its attempt and its backoff) fits only a run that called every ticket
    // left, none asked for a wait, and none has tries of its own (BullMQ's backoff would be that of
    // an earlier attempt).
    const ours = waitMs > 0 || left.some((g) => !g.out.called || g.out.waiting || g.out.own || g.out.again.some((t) => (t.tries ?? 0) > 0));
    if (!ours) {
      // Waiting out the backoff, the job is BullMQ's, not this process's: the long lease again.
      await Promise.all(left.map((g) => deps.renew(g.itemId, g.out.again, deps.now() + deps.leaseMs(g.out.deadlineMs)).catch(() => {})));
      const again = left.map((g) => ({ itemId: g.itemId, version: g.version, tickets: g.out.again }));
      // BullMQ retries it after the backoff of this attempt, timed by this machine's clock.
      const retries = job.attemptsMade + 1 < (job.opts.attempts ?? 1);
      const notBefore = retries ? deps.now() + (await backoffAfter(job, job.attemptsMade + 1)) : undefined;
      if (count(again) < count(groups) || notBefore !== undefined) await job.updateData({ handler: job.data.handler, groups: again, notBefore });
      const fault = outs.find((o) => o.fault !== undefined);
      throw fault ? fault.fault : new RetryLater(`${count(again)} of ${count(groups)} tickets to retry`);
    }
    // A called ticket's wait is at least the backoff its attempt would have had from BullMQ, and
    // what its downstream asked: for the item (every ticket of the job waits it out), or for the
    // ticket's own call (only it does: its notBefore; the job runs again for the others).
    const now = deps.now();
    const dueIn = new Map<JobTicket, number>();
    for (const g of left) {
      for (const t of g.out.again) {
        if (g.out.waiting?.has(t)) dueIn.set(t, Math.max(0, (t.notBefore ?? now) - now));
        else if (!g.out.called) dueIn.set(t, waitMs);
        else dueIn.set(t, Math.max(waitMs, g.out.own?.get(t) ?? 0, await backoffAfter(job, job.attemptsMade + (t.tries ?? 0) + 1)));
      }
    }
    const delayMs = Math.max(waitMs, Math.min(...dueIn.values()));
    const again = left.map((g) => ({
      itemId: g.itemId,
      version: g.version,
      tickets: g.out.again.map((t) => {
        if (g.out.waiting?.has(t)) return t;
        if (!g.out.called) return { ...t, held: (t.held ?? 0) + 1 };
        const { notBefore: _was, ...rest } = t;
        const ownMs = g.out.own?.get(t);
        return { ...rest, tries: (t.tries ?? 0) + 1, ...(ownMs !== undefined && { notBefore: now + dueIn.get(t)! }) };
      }),
    }));
    // The leases must outlast the wait and the run after it, or the tickets would come back to
    // the line and be admitted into a second job meanwhile.
    await Promise.all(left.map((g) => deps.renew(g.itemId, g.out.again, deps.now() + Math.max(delayMs, ...g.out.again.map((t) => dueIn.get(t) ?? 0)) + deps.leaseMs(g.out.deadlineMs)).catch(() => {})));
    // The tries first: moved without them, the job's next run would give its tickets an attempt
    // more. Either call failing throws to BullMQ, which retries the job counting an attempt.
    await job.updateData({ handler: job.data.handler, groups: again, notBefore: deps.now() + delayMs });
    await job.moveToDelayed(Date.now() + delayMs, token);
    log.debug({ jobId: job.id, tickets: count(again), delayMs }, 'job delayed as its downstream asked');
    throw new DelayedError();
  };
}
