import { duplicateConnection, type RedisLike } from '../redis/client.js';
import { throttledWarn } from '../kernel/throttled-warn.js';
import type postgres from 'postgres';
import { isPostgresBusy, isPostgresUnavailable } from '../db/faults.js';
import type { PgHealth } from '../db/health.js';
import { ownSale, unitsLeft, writeSales, type SaleRequest, type SaleResult } from '../db/sales.js';
import { createBatcher, perKey } from '../kernel/batcher.js';
import type { Logger } from '../kernel/logger.js';
import { settlesWithin } from '../kernel/wait.js';
import type { Line } from '../queue/line.js';
import { RequeueError, type HandlerContext } from './handler.js';
import { createJobQueues, RUN_LEASE_MS, type JobOptions } from './jobs.js';
import type { HandlerRegistry } from './registry.js';
import type { Worker } from 'bullmq';
import { createRunner, type Sample, type Settlement } from './runner.js';
import type { DownstreamHealth } from './downstream-health.js';
import type { StockCounters } from './stock-counters.js';
import type { UnsureCalls } from './unsure-calls.js';

export interface ServiceDeps {
  /** A connection for BullMQ (maxRetriesPerRequest: null); workers duplicate it. */
  bullRedis: RedisLike;
  sql: postgres.Sql;
  /** Marked down when a sale finds Postgres unreachable (the dispatcher pauses those items). */
  pg: PgHealth;
  queue: Pick<Line, 'items' | 'admissions' | 'definitions'>;
  /** The Redis stock counters, taken before a sale and given back when it does not happen. */
  stock: StockCounters;
  handlers: HandlerRegistry;
  log: Logger;
  jobs: JobOptions;
  onSample(s: Sample): void;
  /** Told how long each sell took, request to answer (the gate's Postgres pressure signal). */
  onSell?(ms: number): void;
  now(): number;
  onSettled(itemId: string, status: string): void;
  /** An item's unsure downstream calls (service/unsure-calls.ts). */
  unsure(itemId: string): UnsureCalls;
  /** Whether each item's own downstream answers its calls (service/downstream-health.ts). */
  downstream?: DownstreamHealth;
}

type Unit = { itemId: string; seq: number };

/**
 * The service module: job queues, the workers that run handlers, and the coalescing layer every
 * handler call goes through: concurrent stock takes and settles of an item become one Redis
 * script call (and those of many items one call: redis/scripts.ts), and concurrent orders and
 * claims one Postgres call and transaction for all their items (db/sales.ts).
 */
export function createService(deps: ServiceDeps) {
  const { queue, stock } = deps;
  const seller = (table: 'orders' | 'coupon_claims') =>
    createBatcher((b: SaleRequest[]) => writeSales(deps.sql, table, b), { maxBatch: 500, maxWaitMs: 2, concurrency: 2 });
  const sellers = { orders: seller('orders'), coupon_claims: seller('coupon_claims') };
  const redisOpts = { maxBatch: 1000, maxWaitMs: 0, concurrency: 4 };
  const taker = createBatcher(
    perKey(
      (u: Unit) => u.itemId,
      async (itemId, units) => {
        const r = await stock.take(itemId, units.map((u) => u.seq));
        return r.taken.map((taken, i) => ({ taken, ended: r.ended[i], left: r.left }));
      },
    ),
    redisOpts,
  );
  const settler = createBatcher(
    perKey((s: Settlement) => s.itemId, (itemId, entries) => queue.admissions.settleMany(itemId, entries)),
    redisOpts,
  );
  /** One sold-out cut per item at a time, however many tickets find the stock gone together. */
  const once = new Map<string, Promise<unknown>>();
  const single = <T>(key: string, run: () => Promise<T>): Promise<T> => {
    let p = once.get(key) as Promise<T> | undefined;
    if (!p) {
      p = run().finally(() => once.delete(key));
      once.set(key, p);
    }
    return p;
  };
  /** True if cut, false if refused: the item's units were set after `decidedAt` (definitions.cut). */
  const soldOut = (itemId: string, decidedAt: number) => single(`cut:${itemId}`, () => queue.definitions.cut(itemId, 'sold_out', undefined, decidedAt).then((n) => n !== null));
  /**
   * Postgres's word, asked once at a time per item: no units left and none reserved → the item is
   * cut sold out (units reserved may be released: the item is held, its line stays).
   */
  const confirmSoldOut = (itemId: string) =>
    single(`left:${itemId}`, async () => {
      const decidedAt = deps.now();
      const left = await pgCall(() => unitsLeft(deps.sql, itemId));
      if (left !== null && (left.left > 0 || left.reserved > 0)) return false;
      // Restocked since the read: not sold out after all (the ticket waits for a unit).
      return soldOut(itemId, decidedAt);
    });
  /** A Postgres call whose failure to connect makes the ticket wait (requeue) instead of failing. */
  async function pgCall<T>(run: () => Promise<T>): Promise<T> {
    try {
      return await deps.pg.track(run());
    } catch (err) {
      if (!isPostgresUnavailable(err)) throw err;
      deps.pg.markDown(String((err as { code?: string }).code ?? err), isPostgresBusy(err));
      throw new RequeueError('postgres_unavailable');
    }
  }
  const context = (itemId: string): Pick<HandlerContext, 'stock' | 'sell' | 'soldOut' | 'confirmSoldOut' | 'ownSale' | 'unsure'> => ({
    stock: {
      take: (id, seq) => taker.submit({ itemId: id, seq }),
      refund: (id, seq, upTo) => stock.refund(id, seq, upTo),
      forfeit: (id, seq) => stock.forfeit(id, seq),
    },
    sell: async (table, req) => {
      // A refused ticket fails alone: the rest of its batch was sold (db/sales.ts).
      const started = deps.now();
      const sale = await pgCall(() => sellers[table].submit(req)).finally(() => deps.onSell?.(deps.now() - started));
      if (sale.kind === 'refused') throw sale.error;
      return { ...sale, decidedAt: started };
    },
    soldOut: async (decidedAt) => void (await soldOut(itemId, decidedAt)),
    confirmSoldOut: () => confirmSoldOut(itemId),
    ownSale: (table, ref, userId) => pgCall(() => ownSale(deps.sql, table, itemId, ref, userId)),
    unsure: deps.unsure(itemId),
  });

  // Said once, then at most every 5 s with how many more (a Redis refusing connections made BullMQ's
  // workers report several a second each, for as long as it lasted).
  // (The workers' connection's errors too: a line every 2 s through a 12 s outage.)
  const throttled = (msg: string) => {
    const say = throttledWarn(deps.log, msg);
    return (err: unknown) => say({ err: err instanceof Error ? err.message : String(err) });
  };
  const jobs = createJobQueues(deps.bullRedis, deps.jobs, throttled('job queue error'));
  const runner = createRunner({
    item: (id, opts) => queue.items.item(id, opts),
    handlers: deps.handlers,
    log: deps.log,
    attempts: deps.jobs.attempts,
    settle: (s) => settler.submit(s),
    context,
    onSample: deps.onSample,
    now: deps.now,
    onSettled: deps.onSettled,
    renew: (itemId, tickets, until) => queue.admissions.extendLeases(itemId, tickets, until),
    dropHeldEnds: (itemId, tickets) => queue.admissions.dropHeldEnds(itemId, tickets),
    leaseMs: (deadlineMs) => jobs.leaseMs(deadlineMs),
    runLeaseMs: RUN_LEASE_MS,
    downstream: deps.downstream,
  });
  const inProcess = deps.handlers.names().filter((n) => deps.handlers.get(n)?.handle);
  const workerConn = duplicateConnection(deps.bullRedis);
  // The jobs running in this process, for the stop's log when it cannot wait for them all.
  let running = 0;
  const counted: typeof runner = async (job, token) => {
    running++;
    try {
      return await runner(job, token);
    } finally {
      running--;
    }
  };
  const workers = jobs.workers(inProcess, workerConn, counted);
  workerConn.on('error', throttled('redis error (workers)'));
  const workerError = throttled('worker error');
  for (const w of workers) w.on('error', workerError);

  return {
    jobs,
    /**
     * Stops taking jobs now, those running going on (their close is what stop() waits for): from
     * the stop's first moment, not after the HTTP drain. A daemon stopping took jobs other daemons
     * queued while its answers drained (up to 5 s), then dropped them at its close, called again
     * elsewhere (a review's run: exit 1 and a webhook called twice).
     */
    stopTaking(): void {
      for (const w of workers) void w.close().catch(() => {});
    },
    /**
     * Stops taking jobs and waits for those running, up to `workersMs` (the daemon gives it what
     * is left of FLOODGATE_SHUTDOWN_MS once the rest of its stop is reserved: daemon.ts), then
     * closes the job queues within `queuesMs`. Resolves with how many jobs were still running when
     * the wait ran out and the workers were dropped (0: every job finished, or the close hung with
     * none running, as after a cluster failover); those run again elsewhere once their tickets'
     * run leases run out.
     */
    async stop({ workersMs = WORKER_CLOSE_MS, queuesMs = WORKER_CLOSE_MS }: { workersMs?: number; queuesMs?: number } = {}): Promise<{ dropped: number }> {
      let dropped = 0;
      const closed = await closeWorkers(workers, deps.log, workersMs, () => (dropped = running));
      await Promise.all([...Object.values(sellers), taker, settler].map((s) => s.drain()));
      // With Redis gone for good (every node of a cluster down), BullMQ's close waits for a
      // connection that never ends: the stop goes on without it.
      if (!(await settlesWithin(jobs.close(), queuesMs))) deps.log.warn({ afterMs: queuesMs }, 'job queues did not close in time');
      workerConn.disconnect();
      return { dropped: closed ? 0 : dropped };
    },
  };
}

export type Service = ReturnType<typeof createService>;

/**
 * How long stop() waits for the workers' graceful close when its caller gives no budget (the
 * daemon gives what is left of FLOODGATE_SHUTDOWN_MS: daemon.ts). It must be bounded: on a Redis
 * Cluster, a worker whose blocking fetch was in flight to a master that was then killed can wait
 * for it for good: its blocking connection ends, but the command is neither answered nor rejected
 * (measured: 1 stop in 3 after a failover, BullMQ 6.7 + ioredis 6.0), so Worker.close() never
 * resolves.
 */
const WORKER_CLOSE_MS = 10_000;

/** Closes the workers, waiting up to `waitMs` for the jobs they run; resolves with whether they closed. */
export async function closeWorkers(workers: Worker[], log: Logger, waitMs = WORKER_CLOSE_MS, running?: () => number): Promise<boolean> {
  if (await settlesWithin(Promise.all(workers.map((w) => w.close())), waitMs)) return true;
  const left = running?.() ?? 0;
  if (left > 0)
    log.error({ afterMs: waitMs, running: left }, 'workers did not close within the stop budget (FLOODGATE_SHUTDOWN_MS); the jobs still running are dropped and will run again elsewhere');
  else log.warn({ afterMs: waitMs }, 'workers did not close in time; their connections are dropped');
  // BullMQ stops a worker's lock renewal only after the close it is still waiting for: left alone,
  // its timer renews locks on the dropped connection for good (seen as a timer that outlived the
  // stop, test/support/leak-check.ts, after a cluster failover in CI).
  await Promise.all(workers.map((w) => (w as unknown as { lockManager?: { close(): Promise<void> } }).lockManager?.close()));
  // Dropping them waits for their 'end', which a cluster with every node gone never sends.
  await settlesWithin(Promise.all(workers.map((w) => w.disconnect().catch(() => {}))), 1000);
  return false;
}
