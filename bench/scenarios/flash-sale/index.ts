/**
 * The `flash-sale` scenario (settings.ts lists what it does and its knobs): the measured sale(s)
 * (sale.ts: load, facts, analysis, checks), the accepted-joins-only sale (accepted.ts: CPU per
 * accepted join + its order), the drain diagnostic (drain.ts), the outcome ledger
 * checked again for sales where it lagged, then the synchronous baseline (sync.ts) and the report
 * (report.ts). BENCH_FLASH_RESERVE runs the reservations variant (reserve.ts) instead.
 */
import path from 'node:path';
import { daemonWarnings } from '../../lib/daemon-log.js';
import { startDaemon, type BenchContext, type ScenarioOutput } from '../../lib/harness.js';
import { fmtS } from '../../lib/stats.js';
import { runAccepted, type AcceptedOut } from './accepted.js';
import { runDrain, type DrainOut } from './drain.js';
import { flashSaleMarkdown } from './report.js';
import { runReservedSale } from './reserve.js';
import { recheckLedger, runSale, type SaleOut } from './sale.js';
import { ACCEPTED, DRAIN, MANUAL_CAP, WARMUP } from './settings.js';
import { runSync } from './sync.js';

export async function flashSaleScenario(ctx: BenchContext): Promise<ScenarioOutput> {
  const redisPid = Number(/^process_id:(\d+)/m.exec(await ctx.redis.info('server'))?.[1]) || undefined;
  const daemon = await startDaemon(ctx);
  ctx.log(`daemon ready in ${fmtS(daemon.startMs)}`);
  const reserveShare = Number(process.env.BENCH_FLASH_RESERVE ?? 0);
  if (reserveShare > 0) {
    try {
      return { markdown: await runReservedSale(ctx, daemon, reserveShare) };
    } finally {
      await daemon.child.stop();
    }
  }
  const sales: SaleOut[] = [];
  const notes: string[] = [];
  sales.push(await runSale(ctx, daemon, 'flash-auto', { mode: 'auto' }, redisPid, WARMUP > 0));
  if (MANUAL_CAP > 0) {
    if (ctx.elapsedS() + 1.2 * sales[0].joinWallS + 30 < ctx.budgetS) sales.push(await runSale(ctx, daemon, 'flash-manual', { mode: 'manual', maxInFlight: MANUAL_CAP }, redisPid));
    else notes.push(`The second sale (manual gate, maxInFlight ${MANUAL_CAP}) was skipped: it would not fit the run's time budget (${ctx.budgetS} s).`);
  }
  let accepted: AcceptedOut | null = null;
  if (ACCEPTED) {
    if (ctx.elapsedS() + 60 < ctx.budgetS) accepted = await runAccepted(ctx, daemon, 'flash-accepted');
    else notes.push(`The accepted-joins-only sale was skipped: it would not fit the run's time budget (${ctx.budgetS} s).`);
  }
  let drain: DrainOut | null = null;
  if (DRAIN) {
    if (ctx.elapsedS() + 60 < ctx.budgetS) drain = await runDrain(ctx, daemon, 'flash-drain');
    else notes.push(`The drain diagnostic was skipped: it would not fit the run's time budget (${ctx.budgetS} s).`);
  }
  // The outcome ledger again for the sales where it lagged, while the daemon still runs.
  for (const s of sales.filter((x) => !x.ledger.complete)) await recheckLedger(ctx, s);
  const problems = daemon.child.problems;
  await daemon.child.stop();
  const warns = await daemonWarnings(path.join(ctx.tmpDir, 'daemon.log'));
  const sync = await runSync(ctx);

  return { markdown: flashSaleMarkdown({ ctx, sales, accepted, drain, sync, notes, warns, problems }) };
}
