/**
 * The `queue` scenario set: join, poll and reject-when-full against the daemon, each as a ratio to
 * a bare Hono app measured alongside it (throughput.ts); then poll latency at depth (1k vs 1M
 * waiting) and Redis memory per waiting ticket (depth.ts); the report in report.ts.
 */
import { startDaemon, type BenchContext, type ScenarioOutput } from '../../lib/harness.js';
import { cpuCell } from '../../lib/report.js';
import { fmtInt, fmtMs, fmtRatio } from '../../lib/stats.js';
import { measureDepth } from './depth.js';
import { queueMarkdown } from './report.js';
import type { Row } from './settings.js';
import { measureThroughput } from './throughput.js';

export async function queueScenario(ctx: BenchContext): Promise<ScenarioOutput> {
  const rows: Row[] = [];
  const notes: string[] = [];
  const checks: string[] = [];
  const add = (row: Row) => {
    rows.push(row);
    const ra = row.ratio ? `  → ${fmtRatio(row.ratio.value)} ${row.ratio.of} (target ${row.ratio.target}${row.ratio.met ? '' : ', MISSED'})` : '';
    ctx.log(`  ${row.name}: ${fmtInt(row.r.rps)} req/s, p50 ${fmtMs(row.r.p50)} ms, p99 ${fmtMs(row.r.p99)} ms, ${JSON.stringify(row.r.status)}, CPU ${cpuCell(row.r)}${ra}`);
  };
  const daemon = await startDaemon(ctx);
  await measureThroughput(ctx, daemon, add, checks);
  const depth = await measureDepth(ctx, daemon, add, checks);
  const problems = daemon.child.problems;
  await daemon.child.stop();
  return { markdown: queueMarkdown(ctx, rows, depth, checks, notes, problems) };
}
