/**
 * The `gate` scenario: does the dam gate keep any downstream busy but not flooded, without being
 * told its capacity? Every member of the family (bench/lib/gate-family.ts: 5–500 ms, 1–64
 * workers, thrashing, a heavy tail, 503s, timeouts, drift, a moving latency floor) steps
 * C → C/4 → C after a cold start, driven through the real daemon's `auto` gate; a tuned manual
 * gate and BullMQ's limiter run as baselines on the same schedule. Small modules: the downstream
 * (gate-downstream.ts, its own process), the contenders (gate-contenders.ts), the analysis
 * (gate-analysis.ts), the report (gate-report.ts) and a plot per downstream (gate-plot.ts).
 *
 * Knobs (env): BENCH_GATE_MEMBERS (comma list, default all), BENCH_GATE_BASELINES (members that
 * also run the baselines: a comma list, `all` or `none`; default `thrash`, which keeps the whole
 * run near 6 min), BENCH_NO_DOCS=1 (plots to the temp dir, not docs/), BENCH_GATE_DUMP=<path prefix>
 * (each member's raw runs as JSON).
 */
import { writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { analyse } from '../lib/gate-analysis.js';
import { runBullLimiter, runDaemonGate, tunedManual, type ContenderRun } from '../lib/gate-contenders.js';
import { phaseMs, pickFamily, runMs, STEPS } from '../lib/gate-family.js';
import { writeGatePlot } from '../lib/gate-plot.js';
import { gateReport, type MemberResult } from '../lib/gate-report.js';
import { startDaemon, type BenchContext } from '../lib/harness.js';
import { freePort, repoRoot, spawnTsx, waitHealthy } from '../lib/procs.js';
import type { ScenarioOutput } from '../lib/harness.js';

export async function gateScenario(ctx: BenchContext): Promise<ScenarioOutput> {
  const family = pickFamily(process.env.BENCH_GATE_MEMBERS);
  const b = process.env.BENCH_GATE_BASELINES ?? 'thrash';
  const baselines = new Set(b === 'all' ? family.map((d) => d.name) : b === 'none' ? [] : b.split(','));
  const dsPort = await freePort();
  const ds = spawnTsx('downstream', 'bench/lib/gate-downstream.ts', { env: { PORT: String(dsPort) }, logFile: path.join(ctx.tmpDir, 'downstream.log') });
  const dsUrl = `http://127.0.0.1:${dsPort}`;
  await waitHealthy(ds, dsUrl);
  const daemon = await startDaemon(ctx);
  const members: MemberResult[] = [];
  const loadBefore = os.loadavg()[0];
  for (const d of family) {
    ctx.log(`gate: ${d.name} (${d.about}), ${(runMs(d) / 1000).toFixed(0)} s a contender`);
    const runs: ContenderRun[] = [await runDaemonGate(ctx, daemon, dsUrl, d, 'auto', { mode: 'auto' })];
    if (baselines.has(d.name)) {
      runs.push(await runDaemonGate(ctx, daemon, dsUrl, d, 'manual-tuned', tunedManual(d)));
      runs.push(await runBullLimiter(ctx, dsUrl, d));
    }
    const result: MemberResult = { d, runs: runs.map((r) => ({ name: r.name, phases: analyse(d, r.series), notes: r.notes })), plot: null };
    for (const r of result.runs) ctx.log(`  ${r.name}: ${r.phases.map((p) => `${p.delivered.toFixed(2)} ${(p.flooded * 100).toFixed(1)}% ${p.recoveryS === null ? 'never' : `${p.recoveryS.toFixed(1)} s`}`).join(' | ')}`);
    const auto = runs[0];
    const file = `gate-${d.name}.svg`;
    const out = process.env.BENCH_NO_DOCS === '1' ? path.join(os.tmpdir(), file) : path.join(repoRoot, 'docs', file);
    await writeGatePlot(out, {
      title: `Floodgate auto gate on "${d.name}": ${d.about}`,
      subtitle: `${ctx.machine.date}; capacity C → C/4 → C; controller polled every 100 ms, downstream recorded per 100 ms`,
      totalS: runMs(d) / 1000,
      bucketMs: auto.series.bucketMs,
      s0Ms: d.serviceMs,
      phases: STEPS.map((share, i) => ({ fromS: (i * phaseMs(d)) / 1000, toS: ((i + 1) * phaseMs(d)) / 1000, k: Math.max(1, Math.round(d.workers * share)), c: ((d.workers * share) / d.serviceMs) * 1000 })),
      polls: auto.polls,
      buckets: auto.series.buckets.slice(0, Math.ceil(runMs(d) / auto.series.bucketMs)),
    });
    result.plot = process.env.BENCH_NO_DOCS === '1' ? out : file;
    if (process.env.BENCH_GATE_DUMP) await writeFile(`${process.env.BENCH_GATE_DUMP}-${d.name}.json`, JSON.stringify(runs));
    members.push(result);
  }
  await daemon.child.stop();
  await ds.stop();
  // Other work on the machine (the lead's, other helpers') shows in the load average against the cores.
  const busy = `${ctx.machine.nproc} cores, 1-min load average ${loadBefore.toFixed(1)} at the start and ${os.loadavg()[0].toFixed(1)} at the end`;
  return { markdown: gateReport(members, busy) };
}
