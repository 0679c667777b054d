import type { Redis } from 'ioredis';
import type postgres from 'postgres';
import { writeSales, type SaleRequest, type SaleResult } from '../db/sales.js';
import { createBatcher } from '../kernel/batcher.js';
import type { Logger } from '../kernel/logger.js';
import type { Queue } from '../queue/queue.js';
import { createJobQueues, type JobOptions } from './jobs.js';
import type { HandlerRegistry } from './registry.js';
import { createRunner, type Sample } from './runner.js';

export interface ServiceDeps {
  /** A connection for BullMQ (maxRetriesPerRequest: null); workers duplicate it. */
  bullRedis: Redis;
  sql: postgres.Sql;
  queue: Queue;
  handlers: HandlerRegistry;
  log: Logger;
  jobs: JobOptions;
  onSample(s: Sample): void;
  now(): number;
  onSettled(itemId: string, status: string): void;
}

/**
 * The service module: job queues, the workers that run handlers, and the batched Postgres writer
 * that orders and claims go through (a batch is one transaction per item; see db/sales.ts).
 */
export function createService(deps: ServiceDeps) {
  const sellers = {
    orders: createBatcher((b: SaleRequest[]) => writeSales(deps.sql, 'orders', b), { maxBatch: 500, maxWaitMs: 2, concurrency: 2 }),
    coupon_claims: createBatcher((b: SaleRequest[]) => writeSales(deps.sql, 'coupon_claims', b), { maxBatch: 500, maxWaitMs: 2, concurrency: 2 }),
  };
  const jobs = createJobQueues(deps.bullRedis, deps.jobs);
  const runner = createRunner({
    queue: deps.queue,
    handlers: deps.handlers,
    log: deps.log,
    attempts: deps.jobs.attempts,
    sell: (table, req): Promise<SaleResult> => sellers[table].submit(req),
    onSample: deps.onSample,
    now: deps.now,
    onSettled: deps.onSettled,
  });
  const inProcess = deps.handlers.names().filter((n) => deps.handlers.get(n)?.handle);
  const workerConn = deps.bullRedis.duplicate();
  const workers = jobs.workers(inProcess, workerConn, runner);
  for (const w of workers) w.on('error', (err) => deps.log.warn({ err: String(err) }, 'worker error'));

  return {
    jobs,
    async stop() {
      await Promise.all(workers.map((w) => w.close()));
      await Promise.all(Object.values(sellers).map((s) => s.drain()));
      await jobs.close();
      workerConn.disconnect();
    },
  };
}

export type Service = ReturnType<typeof createService>;
