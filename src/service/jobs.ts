import { Queue as BullQueue, Worker, type Job } from 'bullmq';
import { jobQueuePrefix } from '../redis/keys.js';
import type { RedisLike } from '../redis/client.js';
import type { AdmittedTicket } from '../queue/types.js';

/**
 * BullMQ behind one door: one job queue per handler (items share it). A job carries the tickets a
 * dispatcher round admitted for that handler, grouped by item, up to `batch` tickets: BullMQ's
 * per-job cost (an add, a move to active, a move to finished, lock renewals: several Redis scripts
 * and a few hundred µs of this process) is paid once per batch instead of once per ticket, which is
 * what bounded a flash sale at ~1,000 orders/s — and once per round rather than once per item:
 * with a job per item, a sale spread over 10 items queued ten small jobs a round, and BullMQ's
 * worker, which fetches jobs one by one until it holds `concurrency` of them before it runs any
 * while more keep coming, started none for 2.1 s. The job id is the first ticket's lease id, which
 * is unique to that admission, so dispatching the same admission twice adds nothing. Completed
 * and failed jobs are removed at once: the tickets themselves keep the outcomes. Event streams are
 * capped short.
 */
export interface JobTicket {
  ticketId: string;
  seq: number;
  userId: string;
  payload: Record<string, unknown> | null;
  leaseId: string;
  /** Its record at admission (AdmittedTicket.record): its settle is refused for another ticket at the seq. Absent in jobs of earlier versions. */
  record?: string;
  /**
   * Calls of this ticket's handler that ended in a retry the runner delayed itself (a drop with a
   * Retry-After, runner.ts): BullMQ does not count those in the job's `attemptsMade`, so the
   * ticket's attempt is `attemptsMade + tries + 1`. Absent: none (and in jobs of earlier versions).
   */
  tries?: number;
  /** Runs in which the ticket was not called because its item's downstream had asked for a pause (runner.ts); bounded. */
  held?: number;
  /** Not called before this (the daemons' clock, ms): its downstream asked a wait of this ticket's call alone (runner.ts). */
  notBefore?: number;
}

/** One item's tickets in a job. */
export interface JobGroup {
  itemId: string;
  tickets: JobTicket[];
  /** The item's definition version they were admitted under (absent in jobs of earlier versions). */
  version?: number;
}

export interface TicketJob {
  handler: string;
  groups: JobGroup[];
  /**
   * Not to run before this (ms, the daemons' clock: Redis's time), set when the job waits out a
   * backoff or a downstream's Retry-After (runner.ts). BullMQ times its delays by each worker's
   * machine clock: a delay set by a daemon two minutes behind was taken at once by another
   * daemon's worker (a `Retry-After: 20` called again after 2.9 s).
   */
  notBefore?: number;
}

/** A job as an earlier version queued it: one item's tickets (still read, for a rolling upgrade). */
export interface OneItemJob {
  itemId: string;
  handler: string;
  tickets: JobTicket[];
}

/** What a worker may find in the queue. */
export type QueuedJob = TicketJob | OneItemJob;

/** A job's tickets by item, whichever shape it was queued in. */
export const jobGroups = (d: QueuedJob): JobGroup[] => ('groups' in d ? d.groups : [{ itemId: d.itemId, tickets: d.tickets }]);

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
  /**
   * Redis refuses INFO to the daemon's user (a managed service's user without `@dangerous`):
   * BullMQ reads the server's version with it at every connection, and refused, its worker's loop
   * retried without yielding — the daemon answered nothing after `floodgate listening`, ignored
   * SIGTERM and grew by ~13 MB a second (a review). The check is skipped then.
   */
  skipVersionCheck?: boolean;
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

/**
 * `onError`: a job queue's errors. Each BullMQ queue passes on its connection's errors as its own,
 * and a queue nobody listens to prints them raw to stderr (BullMQ catches the throw of an unheard
 * 'error' and writes it with console.error): a Redis outage put ~40 multi-line `ECONNREFUSED` and
 * `write EPIPE` stacks among the daemon's JSON lines.
 */
export function createJobQueues(connection: RedisLike, opts: JobOptions, onError: (err: unknown) => void) {
  const queues = new Map<string, BullQueue>();
  const queueFor = (handler: string) => {
    let q = queues.get(handler);
    if (!q) {
      q = new BullQueue(queueName(handler), {
        connection,
        skipVersionCheck: opts.skipVersionCheck,
        prefix: jobQueuePrefix(opts.prefix, queueName(handler)),
        streams: { events: { maxLen: 100 } },
        defaultJobOptions: {
          attempts: opts.attempts,
          backoff: { type: 'exponential', delay: opts.backoffMs },
          removeOnComplete: true,
          removeOnFail: true,
        },
      });
      q.on('error', onError);
      queues.set(handler, q);
    }
    return q;
  };
  /** The lease of a job's tickets: covers its runs and the longest backoff between two of them. */
  const leaseMs = (deadlineMs: number) => jobLeaseMs(deadlineMs, opts.backoffMs * 2 ** Math.max(0, opts.attempts - 2));
  return {
    leaseMs,
    /** Queues the tickets a round admitted for one handler, by item, in jobs of up to `batch` tickets. */
    async dispatch(handler: string, admitted: { itemId: string; tickets: AdmittedTicket[]; version?: number }[]) {
      const jobs: { name: string; data: TicketJob; opts: { jobId: string } }[] = [];
      let groups: JobGroup[] = [];
      let n = 0;
      const close = () => {
        if (n) jobs.push({ name: 'tickets', data: { handler, groups }, opts: { jobId: `b-${groups[0].tickets[0].leaseId}` } });
        groups = [];
        n = 0;
      };
      for (const { itemId, tickets, version } of admitted) {
        for (let i = 0; i < tickets.length; ) {
          const chunk = tickets.slice(i, i + opts.batch - n);
          groups.push({ itemId, tickets: chunk.map((t): JobTicket => ({ ticketId: t.ticketId, seq: t.seq, userId: t.userId, payload: t.payload, leaseId: t.leaseId, record: t.record })), ...(version !== undefined && { version }) });
          n += chunk.length;
          i += chunk.length;
          if (n >= opts.batch) close();
        }
      }
      close();
      if (jobs.length) await queueFor(handler).addBulk(jobs);
    },
    /** Starts a worker for each handler; `run` settles the ticket itself. */
    workers(handlers: string[], connection: RedisLike, run: (job: Job<QueuedJob>, token?: string) => Promise<void>) {
      return handlers.map(
        (h) =>
          new Worker<QueuedJob>(queueName(h), run, {
            connection,
            skipVersionCheck: opts.skipVersionCheck,
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
