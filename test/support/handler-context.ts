import type postgres from 'postgres';
import { ownSale, unitsLeft, writeSales } from '../../src/db/sales.js';
import { createLogger } from '../../src/kernel/logger.js';
import type { HandlerContext } from '../../src/service/handler.js';
import type { testApp } from './app.js';

type Built = ReturnType<Awaited<ReturnType<typeof testApp>>['build']>;

/**
 * A handler's context with the daemon's parts, for running a built-in handler by hand: Redis's
 * stock counter of the test app, Postgres's rows. `sell` writes sales as the service does, unless
 * a test gives its own.
 */
export function handlerContext(a: Built, sql: postgres.Sql, item: string, sell?: HandlerContext['sell']): HandlerContext {
  return {
    signal: new AbortController().signal,
    deadlineMs: 10_000,
    now: () => Date.now(),
    log: createLogger('silent'),
    stock: {
      take: async (id: string, seq: number) => {
        const r = await a.stock.take(id, [seq]);
        return { taken: r.taken[0], ended: r.ended[0], left: r.left };
      },
      refund: (id: string, seq: number, upTo?: number) => a.stock.refund(id, seq, upTo),
      forfeit: (id: string, seq: number) => a.stock.forfeit(id, seq),
    },
    sell:
      sell ??
      (async (table, r) => {
        const [s] = await writeSales(sql, table, [r]);
        if (s.kind === 'refused') throw s.error;
        return { ...s, decidedAt: Date.now() };
      }),
    soldOut: async () => {},
    confirmSoldOut: async () => ((await unitsLeft(sql, item))?.left ?? 0) <= 0,
    ownSale: (table, ref, userId) => ownSale(sql, table, item, ref, userId),
    unsure: null as never,
  };
}
