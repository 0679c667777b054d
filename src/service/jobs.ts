import { Queue as BullQueue, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import type { AdmittedTicket } from '../queue/types.js';

/**
 * BullMQ behind one door: one job queue per handler (items share it), a job per admitted ticket
 * with jobId = ticketId, so dispatching the same admission twice (a crash between admit and
 * extend) adds nothing. Completed and failed jobs are removed at once: the ticket itself keeps the
 * outcome. Event streams are capped short.
 */
export interface TicketJob {
  ticketId: string;
  itemId: string;
  seq: number;
  userId: string;
  payload: Record<string, unknown> | null;
  leaseId: string;
  handler: string;
}

export interface JobOptions {
  /** BullMQ key prefix (holds a hash tag so a Redis Cluster keeps each queue on one slot). */
  prefix: string;
  attempts: number;
  backoffMs: number;
  concurrency: number;
  lockDurationMs: number;
  stalledIntervalMs: number;
}

export const queueName = (handler: string) => `h-${handler}`;

export function createJobQueues(connection: Redis, opts: JobOptions) {
  const queues = new Map<string, BullQueue>();
  const queueFor = (handler: string) => {
    let q = queues.get(handler);
    if (!q) {
      q = new BullQueue(queueName(handler), {
        connection,
        prefix: `${opts.prefix}{${queueName(handler)}}`,
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
  return {
    async dispatch(handler: string, tickets: AdmittedTicket[]) {
      if (!tickets.length) return;
      await queueFor(handler).addBulk(
        tickets.map((t) => {
          const data: TicketJob = { ticketId: t.ticketId, itemId: t.itemId, seq: t.seq, userId: t.userId, payload: t.payload, leaseId: t.leaseId, handler };
          return { name: 'ticket', data, opts: { jobId: t.ticketId } };
        }),
      );
    },
    /** Starts a worker for each handler; `run` settles the ticket itself. */
    workers(handlers: string[], connection: Redis, run: (job: Job<TicketJob>) => Promise<void>) {
      return handlers.map(
        (h) =>
          new Worker<TicketJob>(queueName(h), run, {
            connection,
            prefix: `${opts.prefix}{${queueName(h)}}`,
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
