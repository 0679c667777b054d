import type { Job } from 'bullmq';
import { FloodgateError } from '../kernel/errors.js';
import type { Logger } from '../kernel/logger.js';
import type { Queue, SettleInput } from '../queue/queue.js';
import { DropError, type HandlerContext, type HandlerOutcome } from './handler.js';
import type { TicketJob } from './jobs.js';
import type { HandlerRegistry } from './registry.js';

/** One call of a handler, as the gate sees it: how long the downstream took, and whether it dropped. */
export interface Sample {
  itemId: string;
  /** When the call started (clock ms): probe samples are those started after a probe began. */
  startedAt: number;
  latencyMs: number;
  result: 'ok' | 'rejected' | 'drop' | 'error';
}

export interface RunnerDeps {
  queue: Queue;
  handlers: HandlerRegistry;
  log: Logger;
  attempts: number;
  sell: HandlerContext['sell'];
  onSample(s: Sample): void;
  now(): number;
  onSettled(itemId: string, status: string): void;
}

/**
 * Runs one ticket job: the item's handler under a deadline, then the ticket settled with the
 * outcome. A drop or fault is rethrown while attempts remain, so BullMQ retries it with backoff
 * (the ticket stays admitted and keeps its in-flight slot meanwhile); after the last attempt the
 * ticket ends `failed`. Settling uses the owner override: the job, not a lease, owns the ticket.
 */
export function createRunner(deps: RunnerDeps) {
  const { queue, log } = deps;

  async function settle(d: TicketJob, input: Omit<SettleInput, 'leaseId' | 'force'>) {
    try {
      await queue.settle(d.ticketId, { ...input, leaseId: d.leaseId, force: true });
      deps.onSettled(d.itemId, input.status);
    } catch (err) {
      // The lease ran out and the ticket went back to the line (it will run again, idempotently),
      // or the item was re-created: nothing left to settle.
      if (err instanceof FloodgateError && (err.code === 'lease_lost' || err.code === 'ticket_not_found'))
        log.warn({ ticketId: d.ticketId, code: err.code }, 'job outcome not settled');
      else throw err;
    }
  }

  return async function run(job: Job<TicketJob>): Promise<void> {
    const d = job.data;
    const item = await queue.item(d.itemId);
    const spec = deps.handlers.get(d.handler);
    if (!item) return log.warn({ ticketId: d.ticketId }, 'job for an item that no longer exists');
    if (!spec?.handle) return settle(d, { status: 'failed', reason: 'no_handler' });
    const config = item.snap.def.config;
    const deadlineMs = spec.deadlineMs?.(config) ?? 10_000;
    const attempt = job.attemptsMade + 1;
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), deadlineMs);
    const ctx: HandlerContext = {
      signal: ac.signal,
      deadlineMs,
      log: log.child({ ticketId: d.ticketId, itemId: d.itemId }),
      stock: queue.stock,
      sell: deps.sell,
      soldOut: async () => {
        await queue.cut(d.itemId, 'sold_out');
      },
    };
    const started = performance.now();
    const startedAt = deps.now();
    let outcome: HandlerOutcome;
    try {
      outcome = await spec.handle({ ticketId: d.ticketId, itemId: d.itemId, seq: d.seq, userId: d.userId, payload: d.payload, config, attempt }, ctx);
      deps.onSample({ itemId: d.itemId, startedAt, latencyMs: performance.now() - started, result: outcome.status === 'succeeded' ? 'ok' : 'rejected' });
    } catch (err) {
      const drop = err instanceof DropError;
      deps.onSample({ itemId: d.itemId, startedAt, latencyMs: performance.now() - started, result: drop ? 'drop' : 'error' });
      const permanent = (err as { permanent?: boolean }).permanent === true;
      if (!permanent && attempt < deps.attempts) {
        log.debug({ ticketId: d.ticketId, attempt, err: String(err) }, 'handler attempt failed; retrying');
        throw err;
      }
      log.warn({ ticketId: d.ticketId, attempt, err: String(err) }, 'handler failed');
      return settle(d, { status: 'failed', reason: drop ? (err as DropError).reason : permanent ? (err as Error).message : 'handler_error' });
    } finally {
      clearTimeout(timer);
    }
    await settle(d, outcome.status === 'succeeded' ? { status: 'succeeded', result: outcome.result } : { status: 'rejected', reason: outcome.reason, result: outcome.result });
  };
}
