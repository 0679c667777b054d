/**
 * The `gate` scenario: does the dam gate keep a downstream busy but not flooded, without being told
 * its capacity? A simulated downstream (bench/lib/gate-downstream.ts, its own process) with K
 * workers, capacity C = K / s0, whose K steps C → C/2 → 2C during the run, is driven through the
 * real daemon (webhook handler, a line filled beforehand so it never runs dry) by four contenders
 * one after another on the same schedule: the `auto` gate, a `manual` gate tuned for phase 1, a
 * `manual` gate tuned badly, and a plain BullMQ worker with BullMQ's own limiter (no daemon).
 *
 * Knobs (env): BENCH_GATE_PHASE_S (s per phase, default 20), BENCH_GATE_K (workers in phase 1,
 * default 20), BENCH_GATE_S0_MS (unloaded service time, default 100), BENCH_GATE_ONLY (comma list
 * of contenders: auto, manual-tuned, manual-bad, bullmq).
 */
import { readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Queue as BullQueue } from 'bullmq';
import { Redis } from 'ioredis';
import postgres from 'postgres';
import { OPERATOR_KEY, SERVICE_KEY } from '../lib/api.js';
import { cpuSnap, cpuUse, type CpuSnap } from '../lib/cpu.js';
import type { BullContenderSpec } from '../lib/gate-bullmq.js';
import { writeGatePlot, type PlotPoll } from '../lib/gate-plot.js';
import { startDaemon, type BenchContext, type Server } from '../lib/harness.js';
import { REDIS_URL } from '../lib/infra.js';
import { runLoad } from '../lib/load.js';
import { freePort, repoRoot, spawnTsx, waitHealthy, type Child } from '../lib/procs.js';
import { mdTable } from '../lib/report.js';
import { fmtInt, fmtS } from '../lib/stats.js';
import type { ScenarioOutput } from '../lib/harness.js';
import type { BucketCounts } from '../lib/gate-bucket.js';

const PHASE_S = Number(process.env.BENCH_GATE_PHASE_S ?? 20);
const K0 = Number(process.env.BENCH_GATE_K ?? 20);
const S0_MS = Number(process.env.BENCH_GATE_S0_MS ?? 100);
const ONLY = (process.env.BENCH_GATE_ONLY ?? 'auto,manual-tuned,manual-bad,bullmq').split(',').map((s) => s.trim());
/** Worker count per phase, as factors of K0: C → C/2 → 2C. */
const PHASE_FACTORS = [1, 0.5, 2];
const POLL_MS = 100;
const ITEM = 'gate-bench';
/** Seconds after a step left out of the "steady" delivered figure (recovery is reported separately). */
const SETTLE_S = 2;
/** Webhook timeout the daemon uses per call (and the BullMQ worker). */
const CALL_TIMEOUT_MS = 2000;
/** The daemon's defaults, used for the BullMQ jobs too. */
const ATTEMPTS = 5;
const BACKOFF_MS = 200;
/** Targets for the auto gate. */
const T_DELIVERED = 0.85;
const T_FLOODED = 0.05;
const T_RECOVERY_S = 2;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, ms)));

interface Phase {
  k: number;
  /** Capacity, calls/s. */
  c: number;
  fromMs: number;
  toMs: number;
}

interface DsBucket extends BucketCounts {
  p50: number | null;
  p99: number | null;
}

interface DsSeries {
  startedAtEpoch: number;
  bucketMs: number;
  s0Ms: number;
  zombies: number;
  buckets: DsBucket[];
}

interface Poll extends PlotPoll {
  waiting: number | null;
  succeeded: number | null;
  failed: number | null;
  effMax: number | null;
  lagMs: number;
}

interface PhaseResult {
  phase: Phase;
  delivered: number;
  deliveredSteady: number;
  flooded: number;
  e503: number;
  recoveryS: number | null;
  p50: number | null;
  meanHeld: number;
  meanLimit: number | null;
  limitRange: [number, number] | null;
  meanAdmitted: number | null;
  probes: number;
  /** The controller's limit after the first SETTLE_S s of the phase, outside probes. */
  steadyLimit: { mean: number; sd: number; min: number; max: number; underHalfK: number; overOneAndHalfK: number; n: number } | null;
}

interface ContenderRun {
  name: string;
  label: string;
  settings: string;
  series: DsSeries;
  polls: Poll[];
  cpu: { whole: Record<string, number>; phases: Record<string, number>[] };
  phases: PhaseResult[];
  checks: string[];
  problems: string[];
}

async function call(base: string, method: string, p: string, key: string | null, body?: unknown) {
  const res = await fetch(`${base}${p}`, {
    method,
    headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  let parsed: Record<string, unknown> = {};
  try {
    parsed = text ? (JSON.parse(text) as Record<string, unknown>) : {};
  } catch {
    parsed = { text };
  }
  return { status: res.status, body: parsed };
}

async function must(base: string, method: string, p: string, key: string | null, body?: unknown) {
  const r = await call(base, method, p, key, body);
  if (r.status >= 300) throw new Error(`${method} ${p}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

type ItemView = {
  counts: Record<string, number>;
  gate: { effective: { maxInFlight: number | null; rate: number | null }; controller: { limit: number; p50Ms: number | null; baseMs: number | null; probing: boolean } | null };
};

export async function gateScenario(ctx: BenchContext): Promise<ScenarioOutput> {
  const phases: Phase[] = PHASE_FACTORS.map((f, i) => {
    const k = Math.max(1, Math.round(K0 * f));
    return { k, c: (k / S0_MS) * 1000, fromMs: i * PHASE_S * 1000, toMs: (i + 1) * PHASE_S * 1000 };
  });
  const totalMs = phases.at(-1)!.toMs;
  const C0 = phases[0].c;
  // Enough tickets for every phase at full capacity, plus a margin: the line never runs dry.
  const tickets = Math.ceil(phases.reduce((n, p) => n + (p.c * (p.toMs - p.fromMs)) / 1000, 0) * 1.15) + 500;
  ctx.log(`gate: K ${phases.map((p) => p.k).join(' → ')} workers, s0 ${S0_MS} ms, C ${phases.map((p) => Math.round(p.c)).join(' → ')}/s, ${PHASE_S} s per phase; ${fmtInt(tickets)} tickets per contender`);

  const redisPid = Number(/^process_id:(\d+)/m.exec(await ctx.redis.info('server'))?.[1]) || undefined;

  // The downstream.
  const dsPort = await freePort();
  const ds = spawnTsx('downstream', 'bench/lib/gate-downstream.ts', { env: { PORT: String(dsPort), GATE_DS_K: String(K0), GATE_DS_S0_MS: String(S0_MS) }, logFile: path.join(ctx.tmpDir, 'downstream.log') });
  const dsUrl = `http://127.0.0.1:${dsPort}`;
  await waitHealthy(ds, dsUrl);
  const daemon = await startDaemon(ctx);
  ctx.log(`downstream on ${dsUrl}; daemon ready in ${fmtS(daemon.startMs)}`);

  const runs: ContenderRun[] = [];
  const daemonContenders: { name: string; label: string; settings: string; gate: Record<string, unknown> }[] = [
    { name: 'auto', label: 'auto gate', settings: '`{"mode":"auto"}`', gate: { mode: 'auto' } },
    {
      name: 'manual-tuned',
      label: 'manual, tuned for phase 1',
      settings: `\`{"mode":"manual","maxInFlight":${K0},"rate":${Math.round(C0)}}\` (K and C of phase 1)`,
      gate: { mode: 'manual', maxInFlight: K0, rate: Math.round(C0) },
    },
    {
      name: 'manual-bad',
      label: 'manual, tuned badly',
      settings: `\`{"mode":"manual","maxInFlight":${4 * K0},"rate":${Math.round(4 * C0)}}\` (4 × K and C of phase 1)`,
      gate: { mode: 'manual', maxInFlight: 4 * K0, rate: Math.round(4 * C0) },
    },
  ];
  const chosen = daemonContenders.filter((c) => ONLY.includes(c.name));
  if (chosen.length) {
    // One item for the three gates: before each, its line is topped up to `tickets` waiting.
    await must(daemon.url, 'PUT', `/v1/items/${ITEM}`, OPERATOR_KEY, { handler: 'webhook', config: { url: `${dsUrl}/`, timeoutMs: CALL_TIMEOUT_MS }, gate: { mode: 'closed' } });
    let filled = topUp(ctx, daemon.url, tickets, 'f0');
    for (const [i, c] of chosen.entries()) {
      const fill = await filled;
      const run = await runDaemonContender(ctx, c, daemon, ds, dsUrl, phases, fill, redisPid, i + 1 < chosen.length ? (tag) => (filled = topUp(ctx, daemon.url, tickets, tag)) : null);
      runs.push(run);
    }
    await call(daemon.url, 'DELETE', `/v1/items/${ITEM}`, OPERATOR_KEY);
  }
  const daemonProblems = [...daemon.child.problems];
  await daemon.child.stop();
  if (ONLY.includes('bullmq')) runs.push(await runBullContender(ctx, ds, dsUrl, phases, tickets, redisPid));
  const dsProblems = [...ds.problems];
  await ds.stop();

  // The plot of the auto run.
  const auto = runs.find((r) => r.name === 'auto');
  let plotFile: string | null = null;
  if (auto) {
    plotFile = process.env.BENCH_NO_DOCS === '1' ? path.join(os.tmpdir(), 'gate-auto.svg') : path.join(repoRoot, 'docs', 'gate-auto.svg');
    await writeGatePlot(plotFile, {
      title: 'Floodgate auto gate, downstream capacity stepping C → C/2 → 2C',
      subtitle: `${ctx.machine.date}; K = ${phases.map((p) => p.k).join(' → ')} workers, s0 = ${S0_MS} ms, ${PHASE_S} s per phase; item view polled every ${POLL_MS} ms, downstream recorded per 100 ms`,
      totalS: totalMs / 1000,
      bucketMs: auto.series.bucketMs,
      s0Ms: S0_MS,
      phases: phases.map((p) => ({ fromS: p.fromMs / 1000, toS: p.toMs / 1000, k: p.k, c: p.c })),
      polls: auto.polls,
      buckets: auto.series.buckets.slice(0, Math.ceil(totalMs / auto.series.bucketMs)),
    });
    ctx.log(`plot written to ${plotFile}`);
  }
  if (process.env.BENCH_GATE_DUMP) await writeFile(process.env.BENCH_GATE_DUMP, JSON.stringify({ phases, runs }, null, 1));

  return { markdown: report(ctx, phases, runs, tickets, plotFile, daemonProblems, dsProblems) };
}

/** Polls the item view every POLL_MS until `untilEpoch`. */
async function pollItem(base: string, itemId: string, t0: number, untilEpoch: number, tick: () => void): Promise<Poll[]> {
  const polls: Poll[] = [];
  let next = Date.now();
  while (Date.now() < untilEpoch) {
    tick();
    const asked = Date.now();
    try {
      const r = await call(base, 'GET', `/v1/items/${itemId}`, OPERATOR_KEY);
      const v = r.body as unknown as ItemView;
      const c = v.gate?.controller ?? null;
      polls.push({
        t: (asked - t0) / 1000,
        limit: c?.limit ?? null,
        admitted: v.counts?.admitted ?? null,
        waiting: v.counts?.waiting ?? null,
        succeeded: v.counts?.succeeded ?? null,
        failed: v.counts?.failed ?? null,
        p50Ms: c?.p50Ms ?? null,
        baseMs: c?.baseMs ?? null,
        probing: c?.probing ?? false,
        effMax: v.gate?.effective?.maxInFlight ?? null,
        lagMs: Date.now() - asked,
      });
    } catch {
      polls.push({ t: (asked - t0) / 1000, limit: null, admitted: null, waiting: null, succeeded: null, failed: null, p50Ms: null, baseMs: null, probing: false, effMax: null, lagMs: Date.now() - asked });
    }
    next += POLL_MS;
    await sleep(next - Date.now());
  }
  return polls;
}

async function startRun(dsUrl: string, phases: Phase[]): Promise<number> {
  const r = await must(dsUrl, 'POST', '/_ctl/run', null, { k0: phases[0].k, s0Ms: S0_MS, steps: phases.slice(1).map((p) => ({ atMs: p.fromMs, k: p.k })) });
  return Number(r.startedAtEpoch);
}

async function dsSeries(dsUrl: string): Promise<DsSeries> {
  return (await must(dsUrl, 'GET', '/_ctl/series', null)) as unknown as DsSeries;
}

/** Waits until the downstream holds nothing (after a contender stopped sending). */
async function dsIdle(dsUrl: string, maxMs: number): Promise<{ inService: number; backlog: number }> {
  const t0 = Date.now();
  for (;;) {
    const s = (await must(dsUrl, 'GET', '/_ctl/state', null)) as { inService: number; backlog: number };
    if ((s.inService === 0 && s.backlog === 0) || Date.now() - t0 > maxMs) return s;
    await sleep(100);
  }
}

async function pidsFor(ctx: BenchContext, extra: Record<string, number | undefined>, ds: Child, redisPid: number | undefined) {
  const pids: Record<string, number | undefined> = { ...extra, downstream: ds.proc.pid, redis: redisPid, bench: process.pid };
  // The scratch database's backends (the daemon's pool), so Postgres is not counted as "other".
  const sql = postgres(ctx.databaseUrl, { max: 1, onnotice: () => {} });
  try {
    const rows = await sql<{ pid: number }[]>`SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`;
    for (const r of rows) pids[`pg:${r.pid}`] = r.pid;
  } catch {
    /* not essential */
  } finally {
    await sql.end({ timeout: 2 });
  }
  return pids;
}

/** CPU over the whole run and per phase: snapshots at the start, at each phase boundary and at the end. */
function cpuTracker(pids: Record<string, number | undefined>, phases: Phase[]) {
  const snaps: CpuSnap[] = [];
  let t0 = 0;
  const fold = (u: Record<string, number>) => {
    const out: Record<string, number> = {};
    for (const [k, v] of Object.entries(u)) {
      const name = k.startsWith('pg:') ? 'postgres' : k;
      out[name] = (out[name] ?? 0) + v;
    }
    return out;
  };
  return {
    start(epoch: number) {
      t0 = epoch;
      snaps.length = 0;
      snaps.push(cpuSnap(pids));
    },
    /** Call often during the run: snapshots when a phase boundary has passed. */
    tick() {
      const i = snaps.length; // next boundary: the end of phase i-1
      if (i <= phases.length && Date.now() - t0 >= phases[i - 1].toMs) snaps.push(cpuSnap(pids));
    },
    finish(): { whole: Record<string, number>; phases: Record<string, number>[] } {
      while (snaps.length <= phases.length) snaps.push(cpuSnap(pids));
      return { whole: fold(cpuUse(snaps[0], snaps.at(-1)!)), phases: phases.map((_, i) => fold(cpuUse(snaps[i], snaps[i + 1]))) };
    },
  };
}

interface Fill {
  waiting: number;
  joined: number;
  ms: number;
  status: Record<string, number>;
}

/** Joins new users until `target` tickets wait in the shared item's line. */
async function topUp(ctx: BenchContext, base: string, target: number, tag: string): Promise<Fill> {
  const t0 = Date.now();
  await sleep(300); // the item view's cache
  const waiting = await counts(base).then((c) => c.waiting);
  const need = target - waiting;
  let status: Record<string, number> = {};
  if (need > 0) {
    const r = await runLoad(ctx.tmpDir, { url: base, connections: 50, headers: { authorization: `Bearer ${SERVICE_KEY}` }, gen: { kind: 'join', path: `/v1/items/${ITEM}/tickets`, userPrefix: `${tag}-` }, amount: need });
    status = r.status;
  }
  await sleep(300);
  return { waiting: await counts(base).then((c) => c.waiting), joined: Math.max(0, need), ms: Date.now() - t0, status };
}

async function counts(base: string): Promise<Record<string, number>> {
  return ((await must(base, 'GET', `/v1/items/${ITEM}`, OPERATOR_KEY)) as unknown as ItemView).counts;
}

async function runDaemonContender(
  ctx: BenchContext,
  c: { name: string; label: string; settings: string; gate: Record<string, unknown> },
  daemon: Server,
  ds: Child,
  dsUrl: string,
  phases: Phase[],
  fill: Fill,
  redisPid: number | undefined,
  refill: ((tag: string) => Promise<Fill>) | null,
): Promise<ContenderRun> {
  const base = daemon.url;
  const checks: string[] = [];
  ctx.log(`${c.name}: ${fmtInt(fill.waiting)} tickets waiting (${fmtInt(fill.joined)} joined in ${fmtS(fill.ms)}, ${JSON.stringify(fill.status)}); gate ${JSON.stringify(c.gate)}`);
  const before = await counts(base);
  if (before.admitted) checks.push(`${fmtInt(before.admitted)} tickets were still admitted at the start.`);

  const cpuT = cpuTracker(await pidsFor(ctx, { daemon: daemon.child.proc.pid }, ds, redisPid), phases);
  const t0 = await startRun(dsUrl, phases);
  cpuT.start(t0);
  await must(base, 'PATCH', `/v1/items/${ITEM}/gate`, OPERATOR_KEY, c.gate);
  const totalMs = phases.at(-1)!.toMs;
  const polls = await pollItem(base, ITEM, t0, t0 + totalMs, cpuT.tick);
  const cpu = cpuT.finish();

  // Stop admitting, let what is in flight finish (topping the line up for the next meanwhile), then check the books.
  await must(base, 'PATCH', `/v1/items/${ITEM}/gate`, OPERATOR_KEY, { mode: 'closed' });
  const td = Date.now();
  const next = refill?.(`${c.name}-next`);
  let after = before;
  let drainedMs: number | null = null;
  while (Date.now() - td < 20_000) {
    await sleep(250);
    after = await counts(base);
    if (after.admitted === 0) {
      drainedMs = Date.now() - td;
      break;
    }
  }
  const idle = await dsIdle(dsUrl, 5000);
  const series = await dsSeries(dsUrl);
  const ok = series.buckets.reduce((n, b) => n + b.ok, 0);
  const e503 = series.buckets.reduce((n, b) => n + b.e503, 0);
  const d = (k: string) => (after[k] ?? 0) - (before[k] ?? 0);
  checks.push(
    `after closing the gate: ${drainedMs !== null ? `in flight drained in ${fmtS(drainedMs)}` : `**${fmtInt(after.admitted)} tickets still admitted after 20 s**`}; this run's tickets: succeeded ${fmtInt(d('succeeded'))}, failed ${fmtInt(d('failed'))}, rejected ${fmtInt(d('rejected'))}, expired ${fmtInt(d('expired'))}; ` +
      `the downstream answered ${fmtInt(ok)} × 200 and ${fmtInt(e503)} × 503 (drain included)${series.zombies ? `, ${series.zombies} calls finished after their caller gave up` : ''}` +
      `${idle.inService || idle.backlog ? `, and still held ${idle.inService + idle.backlog} calls` : ''}.`,
  );
  if (d('succeeded') !== ok) checks.push(`succeeded tickets (${fmtInt(d('succeeded'))}) ≠ 200s from the downstream (${fmtInt(ok)}).`);
  const minWaiting = Math.min(...polls.map((p) => p.waiting ?? Infinity));
  if (minWaiting <= 0) checks.push('**the line ran dry** during the run.');
  await next;
  const run: ContenderRun = { name: c.name, label: c.label, settings: c.settings, series, polls, cpu, phases: analyse(series, phases, polls), checks, problems: [] };
  logRun(ctx, run);
  return run;
}

async function runBullContender(ctx: BenchContext, ds: Child, dsUrl: string, phases: Phase[], tickets: number, redisPid: number | undefined): Promise<ContenderRun> {
  const name = 'gate-bull';
  const prefix = `${ctx.prefix}bull`;
  const max = Math.round(phases[0].c);
  const concurrency = 2 * K0;
  const conn = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
  const q = new BullQueue(name, {
    connection: conn,
    prefix,
    defaultJobOptions: { attempts: ATTEMPTS, backoff: { type: 'exponential', delay: BACKOFF_MS }, removeOnComplete: true, removeOnFail: false },
  });
  const tf = Date.now();
  for (let i = 0; i < tickets; i += 2000)
    await q.addBulk(Array.from({ length: Math.min(2000, tickets - i) }, (_, j) => ({ name: 'call', data: { userId: `bull-${i + j}` } })));
  ctx.log(`bullmq: ${fmtInt(tickets)} jobs added in ${fmtS(Date.now() - tf)}; limiter {max: ${max}, duration: 1000}, concurrency ${concurrency}`);
  const spec: BullContenderSpec = { redisUrl: REDIS_URL, prefix, queue: name, url: `${dsUrl}/`, concurrency, limiter: { max, duration: 1000 }, timeoutMs: CALL_TIMEOUT_MS };
  const specFile = path.join(ctx.tmpDir, 'bull-spec.json');
  await writeFile(specFile, JSON.stringify(spec));
  const worker = spawnTsx('bullmq worker', 'bench/lib/gate-bullmq.ts', { args: [specFile], logFile: path.join(ctx.tmpDir, 'bullmq-worker.log') });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('bullmq worker not ready after 30 s')), 30_000);
    worker.proc.stdout!.on('data', (b: Buffer) => {
      if (b.toString().includes('"msg":"ready"')) {
        clearTimeout(timer);
        resolve();
      }
    });
    void worker.exited.then((code) => reject(new Error(`bullmq worker exited with ${code}: ${worker.problems.join('\n')}`)));
  });

  const cpuT = cpuTracker(await pidsFor(ctx, { worker: worker.proc.pid }, ds, redisPid), phases);
  const t0 = await startRun(dsUrl, phases);
  cpuT.start(t0);
  worker.proc.kill('SIGUSR2');
  const totalMs = phases.at(-1)!.toMs;
  const polls: Poll[] = [];
  let next = Date.now();
  while (Date.now() < t0 + totalMs) {
    cpuT.tick();
    const asked = Date.now();
    const jc = await q.getJobCounts('active', 'waiting', 'delayed', 'failed');
    polls.push({ t: (asked - t0) / 1000, limit: null, admitted: (jc.active ?? 0) + (jc.delayed ?? 0), waiting: jc.waiting ?? null, succeeded: null, failed: jc.failed ?? null, p50Ms: null, baseMs: null, probing: false, effMax: null, lagMs: Date.now() - asked });
    next += POLL_MS;
    await sleep(next - Date.now());
  }
  const cpu = cpuT.finish();
  const jc = await q.getJobCounts('active', 'waiting', 'delayed', 'failed');
  await worker.stop();
  const idle = await dsIdle(dsUrl, 5000);
  const series = await dsSeries(dsUrl);
  const out = await readFile(path.join(ctx.tmpDir, 'bullmq-worker.log'), 'utf8').catch(() => '');
  const closed = /"msg":"closed".*$/m.exec(out)?.[0] ?? '';
  const checks = [
    `at the end of the run: ${Object.entries(jc).map(([k, v]) => `${k} ${fmtInt(v)}`).join(', ')} jobs; the worker said ${closed ? `\`{${closed}\`` : 'nothing on close'}; the downstream ${idle.inService || idle.backlog ? `still held ${idle.inService + idle.backlog} calls` : 'went idle'}.`,
  ];
  await q.obliterate({ force: true }).catch(() => {});
  await q.close();
  conn.disconnect();
  const run: ContenderRun = {
    name: 'bullmq',
    label: 'BullMQ limiter (no daemon)',
    settings: `Worker \`{ concurrency: ${concurrency}, limiter: { max: ${max}, duration: 1000 } }\` (C of phase 1), jobs \`{ attempts: ${ATTEMPTS}, backoff: exponential ${BACKOFF_MS} ms }\``,
    series,
    polls,
    cpu,
    phases: analyse(series, phases, polls),
    checks,
    problems: worker.problems.slice(0, 5),
  };
  logRun(ctx, run);
  return run;
}

function analyse(s: DsSeries, phases: Phase[], polls: Poll[]): PhaseResult[] {
  const per = s.bucketMs;
  const bucket = (i: number): DsBucket => s.buckets[i] ?? { arrivals: 0, ok: 0, e503: 0, abandoned: 0, floodedMs: 0, backlog: 0, backlogMax: 0, inService: 0, k: 0, p50: null, p99: null };
  return phases.map((p) => {
    const i0 = Math.round(p.fromMs / per);
    const i1 = Math.round(p.toMs / per);
    const iSteady = i0 + Math.round((SETTLE_S * 1000) / per);
    let ok = 0;
    let okSteady = 0;
    let flooded = 0;
    let e503 = 0;
    let held = 0;
    const p50s: number[] = [];
    for (let i = i0; i < i1; i++) {
      const b = bucket(i);
      ok += b.ok;
      if (i >= iSteady) okSteady += b.ok;
      flooded += b.floodedMs;
      e503 += b.e503;
      held += b.inService + b.backlog;
      if (b.p50 !== null) p50s.push(b.p50);
    }
    const secs = (i1 - i0) * (per / 1000);
    // Recovered: from the start of the first 2 s stretch in which every 1 s window (sliding by 100 ms)
    // delivered ≥ 0.85·C with the downstream flooded < 5% of the window.
    const win = Math.round(1000 / per);
    const good: boolean[] = [];
    for (let i = i0; i + win <= i1; i++) {
      let wOk = 0;
      let wFlood = 0;
      for (let j = i; j < i + win; j++) {
        wOk += bucket(j).ok;
        wFlood += bucket(j).floodedMs;
      }
      good.push(wOk >= T_DELIVERED * p.c && wFlood < T_FLOODED * 1000);
    }
    let recoveryS: number | null = null;
    for (let i = 0; i + win < good.length; i++) {
      if (good.slice(i, i + win + 1).every(Boolean)) {
        recoveryS = (i * per) / 1000;
        break;
      }
    }
    p50s.sort((a, b) => a - b);
    const inPhase = polls.filter((q) => q.t * 1000 >= p.fromMs && q.t * 1000 < p.toMs);
    const limits = inPhase.map((q) => q.limit).filter((v): v is number => v !== null);
    const admitted = inPhase.map((q) => q.admitted).filter((v): v is number => v !== null);
    const steady = inPhase.filter((q) => q.t * 1000 >= p.fromMs + SETTLE_S * 1000 && !q.probing && q.limit !== null).map((q) => q.limit!);
    const sm = steady.reduce((a, b) => a + b, 0) / (steady.length || 1);
    const steadyLimit = steady.length
      ? {
          mean: sm,
          sd: Math.sqrt(steady.reduce((a, b) => a + (b - sm) ** 2, 0) / steady.length),
          min: Math.min(...steady),
          max: Math.max(...steady),
          underHalfK: steady.filter((v) => v < 0.5 * p.k).length / steady.length,
          overOneAndHalfK: steady.filter((v) => v > 1.5 * p.k).length / steady.length,
          n: steady.length,
        }
      : null;
    const probes = polls.filter((q, i) => q.probing && !polls[i - 1]?.probing && q.t * 1000 >= p.fromMs && q.t * 1000 < p.toMs).length;
    return {
      phase: p,
      delivered: ok / secs / p.c,
      deliveredSteady: okSteady / (secs - SETTLE_S) / p.c,
      flooded: flooded / (secs * 1000),
      e503,
      recoveryS,
      p50: p50s.length ? p50s[Math.floor(p50s.length / 2)] : null,
      meanHeld: held / (i1 - i0),
      meanLimit: limits.length ? limits.reduce((a, b) => a + b, 0) / limits.length : null,
      limitRange: limits.length ? [Math.min(...limits), Math.max(...limits)] : null,
      meanAdmitted: admitted.length ? admitted.reduce((a, b) => a + b, 0) / admitted.length : null,
      probes,
      steadyLimit,
    };
  });
}

const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
const r2 = (x: number) => x.toFixed(2);
const recCell = (r: PhaseResult) => (r.recoveryS === null ? `never (in ${PHASE_S} s)` : `${r.recoveryS.toFixed(1)} s`);
const CPU_ORDER = ['daemon', 'worker', 'postgres', 'redis', 'downstream', 'bench', 'other'];
const cpuCell = (cpu: Record<string, number>) =>
  CPU_ORDER.filter((k) => cpu[k] !== undefined)
    .map((k) => `${k} ${cpu[k].toFixed(2)}`)
    .join(', ');
/** The process that runs the contender's gate: the daemon, or the BullMQ worker. */
const gateCpu = (cpu: Record<string, number>) => cpu.daemon ?? cpu.worker ?? NaN;

function logRun(ctx: BenchContext, run: ContenderRun) {
  for (const r of run.phases)
    ctx.log(
      `  ${run.name} K=${r.phase.k}: delivered ${r2(r.delivered)} C (steady ${r2(r.deliveredSteady)}), flooded ${pct(r.flooded)}, ${r.e503} × 503, recovered ${recCell(r)}, p50 ${r.p50?.toFixed(0) ?? '–'} ms, downstream holds ${r.meanHeld.toFixed(1)}` +
        (r.meanLimit !== null ? `, limit ${r.meanLimit.toFixed(1)} [${r.limitRange![0]}…${r.limitRange![1]}], probes ${r.probes}` : '') +
        (r.meanAdmitted !== null ? `, admitted ${r.meanAdmitted.toFixed(1)}` : ''),
    );
  ctx.log(`  ${run.name} CPU cores: ${cpuCell(run.cpu.whole)}; per phase ${run.cpu.phases.map((c) => `${gateCpu(c).toFixed(2)}`).join(' / ')} (${run.cpu.whole.daemon !== undefined ? 'daemon' : 'worker'}), other ${run.cpu.phases.map((c) => (c.other ?? 0).toFixed(2)).join(' / ')}`);
  for (const c of run.checks) ctx.log(`  ${run.name}: ${c}`);
}

function controllerTable(run: ContenderRun): string {
  return mdTable(
    ['phase', 'K', `limit after the first ${SETTLE_S} s, outside probes: mean ± sd`, 'min – max', 'share of that time with limit < K/2', 'with limit > 1.5·K', 'probes started', 'downstream p50 ms (median of 100 ms buckets)'],
    run.phases.map((r, i) => {
      const l = r.steadyLimit;
      return [
        `${i + 1}`,
        r.phase.k,
        l ? `${l.mean.toFixed(1)} ± ${l.sd.toFixed(1)}` : '–',
        l ? `${l.min} – ${l.max}` : '–',
        l ? pct(l.underHalfK) : '–',
        l ? pct(l.overOneAndHalfK) : '–',
        r.probes,
        r.p50 === null ? '–' : r.p50.toFixed(0),
      ];
    }),
  );
}

function report(ctx: BenchContext, phases: Phase[], runs: ContenderRun[], tickets: number, plotFile: string | null, daemonProblems: string[], dsProblems: string[]): string {
  const phaseName = (p: Phase, i: number) => `${i + 1}: K=${p.k}, C=${Math.round(p.c)}/s`;
  const rows = runs.flatMap((run) =>
    run.phases.map((r, i) => [
      i === 0 ? `**${run.label}**` : '',
      phaseName(r.phase, i),
      r2(r.delivered),
      r2(r.deliveredSteady),
      pct(r.flooded),
      fmtInt(r.e503),
      recCell(r),
      r.p50 === null ? '–' : `${r.p50.toFixed(0)}`,
      r.meanHeld.toFixed(1),
      r.meanAdmitted === null ? '–' : r.meanAdmitted.toFixed(1),
      r.meanLimit === null ? '–' : `${r.meanLimit.toFixed(1)} (${r.limitRange![0]}–${r.limitRange![1]})`,
      `${gateCpu(run.cpu.phases[i]).toFixed(2)} / ${(run.cpu.phases[i].postgres ?? 0).toFixed(2)} / ${(run.cpu.phases[i].redis ?? 0).toFixed(2)} / ${(run.cpu.phases[i].other ?? 0).toFixed(2)}`,
    ]),
  );
  const table = mdTable(
    ['contender', 'phase', 'delivered / C (whole phase)', `delivered / C (after the first ${SETTLE_S} s)`, 'time flooded', '503s', 'recovery', 'downstream p50 ms', 'downstream holds (mean)', 'in flight at the daemon (mean)', 'controller limit: mean (min–max); manual: its shadow opinion', 'CPU cores: daemon (or worker) / postgres / redis / other'],
    rows,
  );

  const auto = runs.find((r) => r.name === 'auto');
  const targetRows: (string | number)[][] = [];
  if (auto) {
    auto.phases.forEach((r, i) => {
      targetRows.push([`phase ${phaseName(r.phase, i)}: delivered / C (whole phase)`, r2(r.delivered), `≥ ${T_DELIVERED}`, r.delivered >= T_DELIVERED ? 'yes' : '**no**']);
      targetRows.push([`phase ${i + 1}: time flooded`, pct(r.flooded), `≤ ${pct(T_FLOODED)}`, r.flooded <= T_FLOODED ? 'yes' : '**no**']);
      if (i > 0) targetRows.push([`phase ${i + 1}: recovery after the step`, recCell(r), `≤ ${T_RECOVERY_S} s`, r.recoveryS !== null && r.recoveryS <= T_RECOVERY_S ? 'yes' : '**no**']);
    });
    const fl = auto.phases.reduce((a, r) => a + r.flooded, 0) / auto.phases.length;
    targetRows.push(['whole run: time flooded', pct(fl), `≤ ${pct(T_FLOODED)}`, fl <= T_FLOODED ? 'yes' : '**no**']);
  }

  const settings = mdTable(
    ['contender', 'settings', 'CPU cores over the run'],
    runs.map((r) => [r.label, r.settings, cpuCell(r.cpu.whole)]),
  );

  const notes: string[] = [];
  if (auto) {
    const lagged = auto.polls.filter((p) => p.lagMs > 50).length;
    const probes = auto.phases.reduce((n, r) => n + r.probes, 0);
    notes.push(`auto: ${probes} probe(s) seen in ${auto.polls.length} polls of the item view (a probe pins the limit to 25% of its value; shaded in the plot).`);
    // Is the daemon filling its own limit? Samples with a line waiting and admitted well under the limit.
    const under = auto.polls.filter((p) => p.limit !== null && p.admitted !== null && (p.waiting ?? 0) > 0 && !p.probing && p.admitted < 0.8 * p.limit).length;
    notes.push(`auto: in ${fmtInt(under)} of ${fmtInt(auto.polls.length)} polls (outside probes) the daemon had fewer than 80% of the controller's limit admitted while tickets waited.${lagged ? ` ${lagged} polls took over 50 ms to answer.` : ''}`);
    notes.push(`Daemon CPU in the auto run, per phase: ${auto.cpu.phases.map((c) => c.daemon.toFixed(2)).join(' / ')} cores (its event loop runs on one core).`);
  }
  for (const run of runs) for (const c of run.checks) notes.push(`${run.label}: ${c}`);
  for (const run of runs) if (run.problems.length) notes.push(`${run.label}: ${run.problems.length} error line(s); first: \`${run.problems[0].slice(0, 300)}\``);
  if (daemonProblems.length) notes.push(`The daemon logged ${daemonProblems.length} error line(s); first: \`${daemonProblems[0].slice(0, 400)}\``);
  if (dsProblems.length) notes.push(`The downstream logged ${dsProblems.length} error line(s); first: \`${dsProblems[0].slice(0, 400)}\``);
  const noisy = runs.filter((r) => (r.cpu.whole.other ?? 0) >= 0.3);
  if (noisy.length) notes.push(`Busy machine: processes outside the bench used ≥ 0.3 cores during ${noisy.map((r) => `${r.label} (${(r.cpu.whole.other ?? 0).toFixed(2)})`).join(', ')}; on ${ctx.machine.nproc} cores that takes CPU from the daemon, Redis and the downstream.`);

  const method = [
    `Downstream (bench/lib/gate-downstream.ts, its own process): K workers, a FIFO backlog, service time s0 × (1 + backlog/(4K)) × U(0.8, 1.2) with s0 = ${S0_MS} ms, 503 at once when the backlog holds 4K calls; capacity C = K / s0. K steps ${phases.map((p) => p.k).join(' → ')} every ${PHASE_S} s (C ${phases.map((p) => Math.round(p.c)).join(' → ')}/s). It records per 100 ms: 200s, 503s, backlog, calls in service, latency (arrival → answer).`,
    `Why C is ${Math.round(phases[0].c)}/s and not more: in development runs on this machine the daemon (webhook handler, one process) carried at most ~750–900 tickets/s, its event loop then using a full core, so the largest phase (2C = ${Math.round(phases[2].c)}/s) leaves it headroom; see its CPU per phase below (≥ 0.9 cores would mean the daemon, not the gate, limits delivery).`,
    `Contenders run one after another against the same downstream and schedule. The three gates drive it through the real daemon (webhook handler, timeout ${CALL_TIMEOUT_MS} ms, default ${ATTEMPTS} attempts with ${BACKOFF_MS} ms exponential backoff on 503) from a line of ${fmtInt(tickets)} tickets joined beforehand (gate closed while filling), so the line never runs dry; the gate is opened as the downstream's schedule starts. BullMQ: ${fmtInt(tickets)} jobs added beforehand, one Worker process calling the downstream directly; the daemon is stopped by then.`,
    `**delivered / C**: 200s from the downstream per second ÷ that phase's C, over the whole phase (what the targets are judged on) and without its first ${SETTLE_S} s. **time flooded**: share of the phase during which the backlog exceeded K (more calls waiting than there are workers), time-weighted. **recovery**: from the start of the phase to the start of the first 2 s stretch in which every 1 s window (sliding by 100 ms) delivered ≥ ${T_DELIVERED} × C with the downstream flooded < 5% of the window, i.e. delivery stays up for a while rather than a single good second (calls admitted before a step down can finish in time to make the first second after it look good); "never" if no such stretch in the phase; for phase 1 it is the start-up. **downstream holds**: calls in service + backlog, sampled every 100 ms. **in flight at the daemon**: the item's \`counts.admitted\` (includes tickets waiting out a retry backoff), polled every ${POLL_MS} ms; for BullMQ, active + delayed jobs.`,
    `Auto targets: delivered ≥ ${T_DELIVERED} × C in every phase, flooded ≤ ${pct(T_FLOODED)} of the time, recovery ≤ ${T_RECOVERY_S} s after each step (phase 1's start-up is shown, not judged). CPU: cores used over the measured ${(phases.at(-1)!.toMs / 1000).toFixed(0)} s and per phase, from /proc (postgres = the scratch database's backends; bench = this process, polling; other = everything else on the machine).`,
  ];

  const plotLine = plotFile
    ? process.env.BENCH_NO_DOCS === '1'
      ? [`Plot of the auto run: \`${plotFile}\` (BENCH_NO_DOCS=1: not written to docs/).`]
      : ['The auto run over time (docs/gate-auto.svg): controller limit, in flight at the daemon and at the downstream, latency and deliveries against the capacity steps; probes shaded.', '', '![auto gate over time](gate-auto.svg)']
    : [];

  return [
    '### Contenders',
    '',
    settings,
    '',
    '### Per phase',
    '',
    table,
    '',
    ...(auto ? ['### Targets (auto gate)', '', mdTable(['measurement', 'value', 'target', 'met'], targetRows), ''] : []),
    ...(auto ? ['### The auto controller per phase', '', controllerTable(auto), ''] : []),
    ...(plotLine.length ? ['### Plot', '', ...plotLine, ''] : []),
    '### Method',
    '',
    ...method.map((m) => `- ${m}`),
    '',
    '### Notes',
    '',
    ...notes.map((n) => `- ${n}`),
  ].join('\n');
}
