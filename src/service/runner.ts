import type { Job } from 'bullmq';
import type { Logger } from '../kernel/logger.js';
import type { SettleInput } from '../queue/line.js';
import type { CachedItem } from '../queue/item-cache.js';
import { DropError, RequeueError, type HandlerContext, type HandlerOutcome, type HandlerSpec } from './handler.js';
import type { JobTicket, TicketJob } from './jobs.js';
import type { HandlerRegistry } from './registry.js';

/** One call of a handler, as the gate sees it: how long the downstream took, and whether it dropped. */
export interface Sample {
  itemId: string;
  /** When the call started (clock ms): probe samples are those started after a probe began. */
  startedAt: number;
  latencyMs: number;
  result: 'ok' | 'rejected' | 'drop' | 'error';
}

/** A ticket's outcome as the runner hands it to the settler (always with the owner override). */
export type Settlement = SettleInput & { itemId: string; seq: number };

export interface RunnerDeps {
  item(itemId: string): Promise<CachedItem | null>;
  handlers: HandlerRegistry;
  log: Logger;
  attempts: number;
  /** Settles one ticket (coalesced with others into one Redis call); returns the settle code. */
  settle(s: Settlement): Promise<number>;
  /** The job-independent part of every handler context (stock, sales, sold-out). */
  context(itemId: string): Pick<HandlerContext, 'stock' | 'sell' | 'soldOut' | 'confirmSoldOut'>;
  onSample(s: Sample): void;
  now(): number;
  onSettled(itemId: string, status: string): void;
  /** How long a job's tickets' leases last (jobs.ts, jobLeaseMs). */
  leaseMs(deadlineMs: number): number;
  /** Extends the leases of a job's tickets to `until` (ms) while it runs. */
  renew(itemId: string, tickets: { seq: number; leaseId: string }[], until: number): Promise<unknown>;
}

/** Thrown to make BullMQ retry a job whose remaining tickets dropped or faulted. */
class RetryLater extends Error {}

/**
 * Runs one job: the item's handler for each of its tickets, concurrently, under one deadline,
 * each ticket settled as soon as its outcome is known (settles of many tickets are coalesced into
 * one Redis call). A ticket that dropped or faulted while attempts remain is kept in the job, the
 * others are taken out of it, and the job is thrown back so BullMQ retries it with backoff (the
 * ticket stays admitted and keeps its in-flight slot meanwhile); after the last attempt the ticket
 * ends `failed`. Settling uses the owner override: the job, not a lease, owns its tickets.
 */
export function createRunner(deps: RunnerDeps) {
  const { log } = deps;

  async function settle(itemId: string, t: JobTicket, input: Omit<SettleInput, 'leaseId' | 'force'>) {
    const code = await deps.settle({ ...input, itemId, seq: t.seq, leaseId: t.leaseId, force: true });
    // -2: the lease ran out and the ticket went back to the line (it will run again,
    // idempotently); -1: the item was re-created. Nothing left to settle either way.
    if (code < 0) log.warn({ itemId, seq: t.seq, code: code === -1 ? 'ticket_not_found' : 'lease_lost' }, 'job outcome not settled');
    else deps.onSettled(itemId, input.retry ? 'retry' : input.status);
  }

  /** Runs the handler for one ticket; returns false when the ticket should be retried. */
  async function runTicket(spec: HandlerSpec, d: TicketJob, t: JobTicket, config: Record<string, unknown>, attempt: number, ctx: HandlerContext): Promise<boolean> {
    const started = performance.now();
    const startedAt = deps.now();
    let outcome: HandlerOutcome;
    try {
      outcome = await spec.handle!({ ticketId: t.ticketId, itemId: d.itemId, seq: t.seq, userId: t.userId, payload: t.payload, config, attempt }, ctx);
      deps.onSample({ itemId: d.itemId, startedAt, latencyMs: performance.now() - started, result: outcome.status === 'succeeded' ? 'ok' : 'rejected' });
    } catch (err) {
      if (err instanceof RequeueError) {
        // Undecidable now (Postgres unreachable, units held by tickets in flight): back to the head.
        log.debug({ itemId: d.itemId, seq: t.seq, reason: err.reason }, 'ticket requeued');
        await settle(d.itemId, t, { status: 'failed', reason: err.reason, retry: true });
        return true;
      }
      const drop = err instanceof DropError;
      deps.onSample({ itemId: d.itemId, startedAt, latencyMs: performance.now() - started, result: drop ? 'drop' : 'error' });
      const permanent = (err as { permanent?: boolean }).permanent === true;
      if (!permanent && attempt < deps.attempts) {
        log.debug({ itemId: d.itemId, seq: t.seq, attempt, err: String(err) }, 'handler attempt failed; retrying');
        return false;
      }
      log.warn({ itemId: d.itemId, seq: t.seq, attempt, err: String(err) }, 'handler failed');
      await settle(d.itemId, t, { status: 'failed', reason: drop ? (err as DropError).reason : permanent ? (err as Error).message : 'handler_error' });
      return true;
    }
    await settle(d.itemId, t, outcome.status === 'succeeded' ? { status: 'succeeded', result: outcome.result } : { status: 'rejected', reason: outcome.reason, result: outcome.result });
    return true;
  }

  return async function run(job: Job<TicketJob>): Promise<void> {
    const d = job.data;
    const item = await deps.item(d.itemId);
    const spec = deps.handlers.get(d.handler);
    if (!item) return log.warn({ itemId: d.itemId, tickets: d.tickets.length }, 'job for an item that no longer exists');
    if (!spec?.handle) {
      await Promise.all(d.tickets.map((t) => settle(d.itemId, t, { status: 'failed', reason: 'no_handler' })));
      return;
    }
    const config = item.snap.def.config;
    const deadlineMs = spec.deadlineMs?.(config) ?? 10_000;
    const attempt = job.attemptsMade + 1;
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), deadlineMs);
    // The tickets' leases live as long as the job runs (jobs.ts, jobLeaseMs); a renewal that fails
    // (Redis unreachable) is harmless: the lease runs out and the ticket is offered again.
    const leaseMs = deps.leaseMs(deadlineMs);
    const renew = () => void deps.renew(d.itemId, d.tickets, deps.now() + leaseMs).catch(() => {});
    renew();
    const renewal = setInterval(renew, leaseMs / 3);
    const ctx: HandlerContext = { signal: ac.signal, deadlineMs, log: log.child({ itemId: d.itemId }), ...deps.context(d.itemId) };
    let results: PromiseSettledResult<boolean>[];
    try {
      results = await Promise.allSettled(d.tickets.map((t) => runTicket(spec, d, t, config, attempt, ctx)));
    } finally {
      clearTimeout(timer);
      clearInterval(renewal);
    }
    // A ticket whose settle failed (Redis unreachable) is retried like one that dropped.
    const again = d.tickets.filter((_, i) => results[i].status === 'rejected' || !(results[i] as PromiseFulfilledResult<boolean>).value);
    if (!again.length) return;
    const fault = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (again.length < d.tickets.length) await job.updateData({ ...d, tickets: again });
    throw fault ? fault.reason : new RetryLater(`${again.length} of ${d.tickets.length} tickets to retry`);
  };
}
