import type { Redis } from 'ioredis';
import type postgres from 'postgres';
import { writeSales, type SaleRequest, type SaleResult } from '../db/sales.js';
import { createBatcher, perKey } from '../kernel/batcher.js';
import type { Logger } from '../kernel/logger.js';
import type { Queue } from '../queue/queue.js';
import type { HandlerContext } from './handler.js';
import { createJobQueues, type JobOptions } from './jobs.js';
import type { HandlerRegistry } from './registry.js';
import { createRunner, type Sample, type Settlement } from './runner.js';

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

type Unit = { itemId: string; seq: number };

/**
 * The service module: job queues, the workers that run handlers, and the coalescing layer every
 * handler call goes through: concurrent stock takes and settles of an item become one Redis
 * script call, and concurrent orders and claims one Postgres transaction per item (db/sales.ts).
 */
export function createService(deps: ServiceDeps) {
  const { queue } = deps;
  const seller = (table: 'orders' | 'coupon_claims') =>
    createBatcher((b: SaleRequest[]) => writeSales(deps.sql, table, b), { maxBatch: 500, maxWaitMs: 2, concurrency: 2 });
  const sellers = { orders: seller('orders'), coupon_claims: seller('coupon_claims') };
  const redisOpts = { maxBatch: 1000, maxWaitMs: 0, concurrency: 4 };
  const taker = createBatcher(
    perKey(
      (u: Unit) => u.itemId,
      async (itemId, units) => {
        const r = await queue.stock.take(itemId, units.map((u) => u.seq));
        return r.taken.map((taken) => ({ taken, left: r.left }));
      },
    ),
    redisOpts,
  );
  const settler = createBatcher(
    perKey((s: Settlement) => s.itemId, (itemId, entries) => queue.settleMany(itemId, entries)),
    redisOpts,
  );
  /** One sold-out cut per item at a time, however many tickets find the stock gone together. */
  const cutting = new Map<string, Promise<void>>();
  const soldOut = (itemId: string) => {
    let p = cutting.get(itemId);
    if (!p) {
      p = queue.cut(itemId, 'sold_out').then(() => undefined).finally(() => cutting.delete(itemId));
      cutting.set(itemId, p);
    }
    return p;
  };
  const context = (itemId: string): Pick<HandlerContext, 'stock' | 'sell' | 'soldOut'> => ({
    stock: { take: (id, seq) => taker.submit({ itemId: id, seq }), refund: (id, seq) => queue.stock.refund(id, seq) },
    sell: async (table, req): Promise<SaleResult> => {
      // A refused ticket fails alone: the rest of its batch was sold (db/sales.ts).
      const sale = await sellers[table].submit(req);
      if (sale.kind === 'refused') throw sale.error;
      return sale;
    },
    soldOut: () => soldOut(itemId),
  });

  const jobs = createJobQueues(deps.bullRedis, deps.jobs);
  const runner = createRunner({
    item: (id) => queue.item(id),
    handlers: deps.handlers,
    log: deps.log,
    attempts: deps.jobs.attempts,
    settle: (s) => settler.submit(s),
    context,
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
      await Promise.all([...Object.values(sellers), taker, settler].map((s) => s.drain()));
      await jobs.close();
      workerConn.disconnect();
    },
  };
}

export type Service = ReturnType<typeof createService>;
