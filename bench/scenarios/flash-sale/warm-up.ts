import { existsSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import postgres from 'postgres';
import { defineItem, itemView, terminalCount } from '../../lib/api.js';
import type { BenchContext, Server } from '../../lib/harness.js';
import type { LoadResult, LoadSpec } from '../../lib/load-spec.js';
import { fmtInt, fmtS } from '../../lib/stats.js';
import { auth, CONNECTIONS, LEDGER_RECHECK_S, SELL_OUT_WAIT_S, WARMUP } from './settings.js';

/**
 * A smaller sale on an item of its own, not measured: V8 compiles the daemon's hot paths and its
 * pools open. Its join load runs in the same generator process as the measured sale's first pass,
 * which waits for a go file: the generator's own JIT warm-up (its first second ran at about half
 * the rate of the next ones) is not counted against the daemon either.
 */
export function warmUp(ctx: BenchContext, daemon: Server) {
  const itemId = 'flash-warmup';
  const doneFile = path.join(ctx.tmpDir, 'warmup.done');
  const goFile = path.join(ctx.tmpDir, 'sale.go');
  const spec: LoadSpec = {
    url: daemon.url,
    connections: CONNECTIONS,
    headers: auth,
    amount: 2 * WARMUP,
    gen: { kind: 'join', path: `/v1/items/${itemId}/tickets`, userPrefix: 'w-' },
    doneFile,
  };
  return {
    spec,
    goFile,
    async define() {
      await defineItem(daemon.url, itemId, { handler: 'seckill', config: { stock: WARMUP }, gate: { mode: 'auto' } });
    },
    /** Waits for the warm-up load, then for its sale to end and its outcome ledger to be written. */
    async settled(from: number, generator: Promise<unknown>): Promise<void> {
      let failed: unknown = null;
      generator.catch((err) => (failed = err));
      while (!existsSync(doneFile)) {
        if (failed) throw failed;
        if (Date.now() - from > SELL_OUT_WAIT_S * 1000) throw new Error('the warm-up load did not finish');
        await sleep(50);
      }
      let view = await itemView(daemon.url, itemId);
      while (Date.now() - from < SELL_OUT_WAIT_S * 1000 && ((view.counts.admitted ?? 0) > 0 || (view.counts.waiting ?? 0) > 0)) {
        await sleep(250);
        view = await itemView(daemon.url, itemId);
      }
      const terminal = terminalCount(view.counts);
      const sql = postgres(ctx.databaseUrl, { max: 1, onnotice: () => {} });
      try {
        for (let rows = 0; Date.now() - from < (SELL_OUT_WAIT_S + LEDGER_RECHECK_S) * 1000; await sleep(250)) {
          [{ n: rows }] = await sql<{ n: number }[]>`select count(*)::int as n from ticket_outcomes where item_id = ${itemId}`;
          if (rows >= terminal) break;
        }
      } finally {
        await sql.end({ timeout: 5 });
      }
      ctx.log(`warm-up sale on "${itemId}": ${fmtInt(view.counts.succeeded ?? 0)} orders, over in ${fmtS(Date.now() - from)}`);
    },
    note: (load: LoadResult) =>
      `Warm-up before the measured sale (not counted): a ${fmtInt(WARMUP)}-unit seckill sale on item \`${itemId}\`, ${fmtInt(2 * WARMUP)} new users joining at ${fmtInt(load.rps)}/s, sent by the generator process that then sends the measured sale's first pass.`,
  };
}