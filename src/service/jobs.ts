import { Queue as BullQueue, Worker, type Job } from 'bullmq';
import { jobQueuePrefix } from '../redis/keys.js';
import type { RedisLike } from '../redis/client.js';
import type { AdmittedTicket } from '../queue/types.js';

/**
 * BullMQ behind one door: one job queue per handler (items share it). A job carries a batch of
 * tickets of one item admitted together (up to `batch`): BullMQ's per-job cost (an add, a move to
 * active, a move to finished, lock renewals: several Redis scripts and a few hundred µs of this
 * process) is paid once per batch instead of once per ticket, which is what bounded a flash sale
 * at ~1,000 orders/s. The job id is the first ticket's lease id, which is unique to that admission,
 * so dispatching the same admission twice adds nothing. Completed and failed jobs are removed at
 * once: the tickets themselves keep the outcomes. Event streams are capped short.
 */
export interface JobTicket {
  ticketId: string;
  seq: number;
  userId: string;
  payload: Record<string, unknown> | null;
  leaseId: string;
}

export interface TicketJob {
  itemId: string;
  handler: string;
  tickets: JobTicket[];
}

export interface JobOptions {
  /** BullMQ key prefix (holds a hash tag so a Redis Cluster keeps each queue on one slot). */
  prefix: string;
  attempts: number;
  backoffMs: number;
  concurrency: number;
  lockDurationMs: number;
  stalledIntervalMs: number;
  /** Most tickets in one job. */
  batch: number;
}

export const queueName = (handler: string) => `h-${handler}`;

/**
 * How long the lease of a ticket handed to a job lasts: renewed by the job while it runs (every
 * third of it), so a ticket whose job vanished (a Redis rollback that lost it, a worker that never
 * got its settle through) comes back to the head of the line within this long and runs again —
 * idempotently — instead of waiting for BullMQ's own stall recovery, which a Redis restart can stop.
 */
export const jobLeaseMs = (deadlineMs: number, longestBackoffMs = 0) => Math.max(30_000, deadlineMs * 3, longestBackoffMs * 2);

/**
 * The lease of a running job's tickets: short, renewed every third of it while the job runs. A
 * daemon that dies mid-job stops renewing, so its tickets' in-flight slots come back to the gate
 * (the sweep returns them to the head of the line) within this long, instead of when BullMQ's lock
 * runs out and its stall check runs (15 s by default); a job BullMQ hands over later finds its
 * leases superseded and runs nothing. A live daemon whose event loop stalls this long may see a
 * ticket run twice; handlers are idempotent.
 */
export const RUN_LEASE_MS = 3000;

export function createJobQueues(connection: RedisLike, opts: JobOptions) {
  const queues = new Map<string, BullQueue>();
  const queueFor = (handler: string) => {
    let q = queues.get(handler);
    if (!q) {
      q = new BullQueue(queueName(handler), {
        connection,
        prefix: jobQueuePrefix(opts.prefix, queueName(handler)),
        streams: { events: { maxLen: 100 } },
        defaultJobOptions: {
          attempts: opts.attempts,
          backoff: { type: 'exponential', delay: opts.backoffMs },
          removeOnComplete: true,
          removeOnFail: true,
        },
      });
      queues.set(handler, q);
    }
    return q;
  };
  /** The lease of a job's tickets: covers its runs and the longest backoff between two of them. */
  const leaseMs = (deadlineMs: number) => jobLeaseMs(deadlineMs, opts.backoffMs * 2 ** Math.max(0, opts.attempts - 2));
  return {
    leaseMs,
    /** Queues tickets of one item admitted together, in jobs of up to `batch` tickets. */
    async dispatch(handler: string, itemId: string, admitted: AdmittedTicket[]) {
      const jobs = [];
      for (let i = 0; i < admitted.length; i += opts.batch) {
        const chunk = admitted.slice(i, i + opts.batch);
        const tickets = chunk.map((t): JobTicket => ({ ticketId: t.ticketId, seq: t.seq, userId: t.userId, payload: t.payload, leaseId: t.leaseId }));
        const data: TicketJob = { itemId, handler, tickets };
        jobs.push({ name: 'tickets', data, opts: { jobId: `b-${chunk[0].leaseId}` } });
      }
      if (jobs.length) await queueFor(handler).addBulk(jobs);
    },
    /** Starts a worker for each handler; `run` settles the ticket itself. */
    workers(handlers: string[], connection: RedisLike, run: (job: Job<TicketJob>) => Promise<void>) {
      return handlers.map(
        (h) =>
          new Worker<TicketJob>(queueName(h), run, {
            connection,
            prefix: jobQueuePrefix(opts.prefix, queueName(h)),
            concurrency: opts.concurrency,
            lockDuration: opts.lockDurationMs,
            stalledInterval: opts.stalledIntervalMs,
            maxStalledCount: 10,
            removeOnComplete: { count: 0 },
            removeOnFail: { count: 0 },
          }),
      );
    },
    async close() {
      await Promise.all([...queues.values()].map((q) => q.close()));
    },
  };
}

export type JobQueues = ReturnType<typeof createJobQueues>;
