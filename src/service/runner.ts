import type { Job } from 'bullmq';
import type { Logger } from '../kernel/logger.js';
import type { SettleInput } from '../queue/line.js';
import type { CachedItem } from '../queue/item-cache.js';
import { DropError, RequeueError, type HandlerContext, type HandlerOutcome, type HandlerSpec } from './handler.js';
import { jobGroups, type JobGroup, type JobTicket, type QueuedJob } from './jobs.js';
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
  /** How long a job's tickets' leases last while it waits out a retry backoff (jobs.ts, jobLeaseMs). */
  leaseMs(deadlineMs: number): number;
  /** How long they last while it runs, renewed every third of it (jobs.ts, RUN_LEASE_MS). */
  runLeaseMs: number;
  /** Extends the leases of a job's tickets to `until` (ms); resolves with how many were still theirs. */
  renew(itemId: string, tickets: { seq: number; leaseId: string }[], until: number): Promise<number>;
}

/** Thrown to make BullMQ retry a job whose remaining tickets dropped or faulted. */
class RetryLater extends Error {}

/**
 * Runs one job: for each item in it, the item's handler for each of its tickets, concurrently,
 * under the item's deadline, each ticket settled as soon as its outcome is known (settles of many
 * tickets are coalesced into one Redis call). A ticket that dropped or faulted while attempts
 * remain is kept in the job, the others are taken out of it, and the job is thrown back so BullMQ
 * retries it with backoff (the ticket stays admitted and keeps its in-flight slot meanwhile);
 * after the last attempt the ticket ends `failed`. Settling uses the owner override: the job, not
 * a lease, owns its tickets.
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
  async function runTicket(spec: HandlerSpec, itemId: string, t: JobTicket, config: Record<string, unknown>, attempt: number, ctx: HandlerContext): Promise<boolean> {
    const started = performance.now();
    const startedAt = deps.now();
    let outcome: HandlerOutcome;
    try {
      outcome = await spec.handle!({ ticketId: t.ticketId, itemId, seq: t.seq, userId: t.userId, payload: t.payload, config, attempt }, ctx);
      deps.onSample({ itemId, startedAt, latencyMs: performance.now() - started, result: outcome.status === 'succeeded' ? 'ok' : 'rejected' });
    } catch (err) {
      if (err instanceof RequeueError) {
        // Undecidable now (Postgres unreachable, units held by tickets in flight): back to the head.
        log.debug({ itemId, seq: t.seq, reason: err.reason }, 'ticket requeued');
        await settle(itemId, t, { status: 'failed', reason: err.reason, retry: true });
        return true;
      }
      const drop = err instanceof DropError;
      deps.onSample({ itemId, startedAt, latencyMs: performance.now() - started, result: drop ? 'drop' : 'error' });
      const permanent = (err as { permanent?: boolean }).permanent === true;
      if (!permanent && attempt < deps.attempts) {
        log.debug({ itemId, seq: t.seq, attempt, err: String(err) }, 'handler attempt failed; retrying');
        return false;
      }
      log.warn({ itemId, seq: t.seq, attempt, err: String(err) }, 'handler failed');
      await settle(itemId, t, { status: 'failed', reason: drop ? (err as DropError).reason : permanent ? (err as Error).message : 'handler_error' });
      return true;
    }
    await settle(itemId, t, outcome.status === 'succeeded' ? { status: 'succeeded', result: outcome.result } : { status: 'rejected', reason: outcome.reason, result: outcome.result });
    return true;
  }

  /** One item's tickets of a job: those to retry, and the fault to report if one faulted. */
  async function runGroup(spec: HandlerSpec | undefined, g: JobGroup, attempt: number): Promise<{ again: JobTicket[]; fault?: unknown }> {
    const { itemId, tickets } = g;
    const item = await deps.item(itemId);
    if (!item) {
      log.warn({ itemId, tickets: tickets.length }, 'job for an item that no longer exists');
      return { again: [] };
    }
    if (!spec?.handle) {
      await Promise.all(tickets.map((t) => settle(itemId, t, { status: 'failed', reason: 'no_handler' })));
      return { again: [] };
    }
    const config = item.snap.def.config;
    const deadlineMs = spec.deadlineMs?.(config) ?? 10_000;
    // The tickets' leases live as long as this process runs the job (jobs.ts, RUN_LEASE_MS); a
    // renewal that fails (Redis unreachable) is harmless: the lease runs out and the ticket is
    // offered again. None still ours: a job of a dead daemon that BullMQ handed over after its
    // tickets had come back to the line and been admitted again; they run in their new job.
    const held = await deps.renew(itemId, tickets, deps.now() + deps.runLeaseMs).catch(() => null);
    if (held === 0) {
      log.info({ itemId, tickets: tickets.length }, 'job skipped: its tickets were offered again');
      return { again: [] };
    }
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), deadlineMs);
    const renew = () => void deps.renew(itemId, tickets, deps.now() + deps.runLeaseMs).catch(() => {});
    const renewal = setInterval(renew, deps.runLeaseMs / 3);
    const ctx: HandlerContext = { signal: ac.signal, deadlineMs, log: log.child({ itemId }), ...deps.context(itemId) };
    let results: PromiseSettledResult<boolean>[];
    try {
      results = await Promise.allSettled(tickets.map((t) => runTicket(spec, itemId, t, config, attempt, ctx)));
    } finally {
      clearTimeout(timer);
      clearInterval(renewal);
    }
    // A ticket whose settle failed (Redis unreachable) is retried like one that dropped.
    const again = tickets.filter((_, i) => results[i].status === 'rejected' || !(results[i] as PromiseFulfilledResult<boolean>).value);
    if (!again.length) return { again };
    // Waiting out the backoff, the job is BullMQ's, not this process's: the long lease again.
    await deps.renew(itemId, again, deps.now() + deps.leaseMs(deadlineMs)).catch(() => {});
    const fault = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    return { again, fault: fault?.reason };
  }

  return async function run(job: Job<QueuedJob>): Promise<void> {
    const groups = jobGroups(job.data);
    const spec = deps.handlers.get(job.data.handler);
    const outs = await Promise.all(groups.map((g) => runGroup(spec, g, job.attemptsMade + 1)));
    const again = groups.map((g, i) => ({ itemId: g.itemId, tickets: outs[i].again })).filter((g) => g.tickets.length);
    if (!again.length) return;
    const count = (gs: JobGroup[]) => gs.reduce((n, g) => n + g.tickets.length, 0);
    if (count(again) < count(groups)) await job.updateData({ handler: job.data.handler, groups: again });
    const fault = outs.find((o) => o.fault !== undefined);
    throw fault ? fault.fault : new RetryLater(`${count(again)} of ${count(groups)} tickets to retry`);
  };
}
