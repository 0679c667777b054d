/**
 * Poll latency at depth: a line of SMALL and one of (up to) BIG waiting tickets, polled in
 * alternating slices at a fixed number of connections; and Redis memory per waiting ticket, by
 * INFO used_memory around the big fill and by MEMORY USAGE over the item's keys.
 */
import { putItem, waitingCount } from '../../lib/api.js';
import { measurePair, type BenchContext, type Server } from '../../lib/harness.js';
import { memoryUsage, usedMemory } from '../../lib/infra.js';
import { runLoad } from '../../lib/load.js';
import { statusCell } from '../../lib/report.js';
import { fmtInt, fmtS, spread } from '../../lib/stats.js';
import { fill } from './fill.js';
import { BIG, DEPTH_CONNECTIONS, DEPTH_ROUNDS, FILL_MAX_ENV, LOAD_START_S, PROGRESS_MS, SAMPLE, SMALL, type Row } from './settings.js';
import { loadOn, ratioRow } from './throughput.js';

export type Depth = Awaited<ReturnType<typeof measureDepth>>;

export async function measureDepth(ctx: BenchContext, daemon: Server, add: (row: Row) => void, checks: string[]) {
  const url = daemon.url;
  ctx.log(`depth: filling ${fmtInt(SMALL)} and up to ${fmtInt(BIG)} waiting tickets`);
  await putItem(url, 'depth-1k', 10_000_000);
  const smallIds = await fill(ctx, daemon, 'depth-1k', SMALL, 'd-');
  await putItem(url, 'depth-big', 10_000_000);
  const afterFillS = 2 * (ctx.warmupS + ctx.durationS) + LOAD_START_S + 5;
  const fillMaxS = FILL_MAX_ENV !== undefined ? Number(FILL_MAX_ENV) : Math.max(30, Math.floor(ctx.budgetS - ctx.elapsedS() - afterFillS));
  ctx.log(`  big fill: up to ${fmtInt(BIG)} joins${fillMaxS ? `, for at most ${fillMaxS} s (the run's time budget)` : ''}`);
  const memBefore = await usedMemory(ctx.redis);
  const t0 = Date.now();
  const marks: { ms: number; n: number }[] = [{ ms: 0, n: 0 }];
  const progress = setInterval(() => {
    waitingCount(url, 'depth-big').then(
      (n) => {
        marks.push({ ms: Date.now() - t0, n });
        ctx.log(`  … ${fmtInt(n)} waiting after ${fmtS(Date.now() - t0)}`);
      },
      () => {},
    );
  }, PROGRESS_MS);
  const sampleEvery = Math.max(1, Math.floor(BIG / (SAMPLE * 10)));
  const fillR = await runLoad(
    ctx.tmpDir,
    { ...loadOn(daemon, { kind: 'join', path: '/v1/items/depth-big/tickets', userPrefix: 'b', sampleEvery })('0'), amount: BIG },
    { maxS: fillMaxS || undefined },
  ).finally(() => clearInterval(progress));
  const fillMs = Date.now() - t0;
  const memAfter = await usedMemory(ctx.redis);
  const bigWaiting = await waitingCount(url, 'depth-big');
  const joinsPerS = bigWaiting / (fillMs / 1000);
  marks.push({ ms: fillMs, n: bigWaiting });
  const fillRates = marks.slice(1).map((m, i) => `${fmtInt(marks[i].n)}+: ${fmtInt(((m.n - marks[i].n) * 1000) / (m.ms - marks[i].ms))}`);
  const bigIds = spread(fillR.samples.sort((a, b) => a.position - b.position), SAMPLE).map((s) => s.ticketId);
  const depthLabel = bigWaiting === BIG ? fmtInt(BIG) : `${fmtInt(bigWaiting)} (of ${fmtInt(BIG)} asked)`;
  ctx.log(`  filled ${fmtInt(bigWaiting)} in ${fmtS(fillMs)} (${fmtInt(joinsPerS)} joins/s, ${JSON.stringify(fillR.status)}), ${bigIds.length} ids sampled`);
  const usage = await memoryUsage(ctx.redis, `${ctx.prefix}{depth-big}:`);
  checks.push(
    `fill: ${fmtInt(bigWaiting)} waiting at the server (asked for ${fmtInt(BIG)}${fillMaxS ? `, fill capped at ${fillMaxS} s` : ''}); autocannon saw ${statusCell(fillR.status)}, ${fillR.errors} errors, ${fillR.timeouts} timeouts; ${bigIds.length} ticket ids sampled for polling, positions ${fmtInt(bigIds.length ? fillR.samples[0].position : 0)} … ${fmtInt(fillR.samples.at(-1)?.position ?? 0)}.`,
  );

  const [depthSmall, depthBig] = await measurePair(
    ctx,
    loadOn(daemon, { kind: 'poll', ticketIds: smallIds }, DEPTH_CONNECTIONS),
    loadOn(daemon, { kind: 'poll', ticketIds: bigIds }, DEPTH_CONNECTIONS),
    DEPTH_ROUNDS,
  );
  const depthRatio = ratioRow(depthSmall, depthBig, `p50 ÷ p50 at ${fmtInt(SMALL)}`, 1.2, false, (r) => r.p50);
  add({ name: `poll at depth ${fmtInt(SMALL)} (${DEPTH_CONNECTIONS} connections)`, r: depthSmall, expect: '200' });
  add({ name: `poll at depth ${depthLabel} (${DEPTH_CONNECTIONS} connections)`, r: depthBig, expect: '200', ratio: depthRatio });

  const perInfo = (memAfter - memBefore) / bigWaiting;
  const perUsage = usage.bytes / bigWaiting;
  ctx.log(`  redis: used_memory +${fmtInt(memAfter - memBefore)} B = ${perInfo.toFixed(1)} B/ticket; MEMORY USAGE over ${fmtInt(usage.keys)} keys = ${fmtInt(usage.bytes)} B = ${perUsage.toFixed(1)} B/ticket`);
  return { depthSmall, depthBig, depthRatio, p50Ratio: depthRatio.value, fillMs, fillMaxS, joinsPerS, fillRates, depthLabel, bigWaiting, memBefore, memAfter, usage, perInfo, perUsage };
}
