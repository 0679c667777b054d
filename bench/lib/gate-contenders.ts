/**
 * The `gate` bench's contenders, each driving one member of the downstream family through its
 * schedule: a gate of the real daemon (auto, or manual with the operator's numbers) draining a line
 * filled beforehand, or a plain BullMQ worker with BullMQ's own limiter (no daemon).
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Queue as BullQueue } from 'bullmq';
import { Redis } from 'ioredis';
import { OPERATOR_KEY, SERVICE_KEY } from './api.js';
import type { DsSeries } from './gate-analysis.js';
import type { BullContenderSpec } from './gate-bullmq.js';
import { callTimeoutMs, runMs, type Downstream } from './gate-family.js';
import type { PlotPoll } from './gate-plot.js';
import type { BenchContext, Server } from './harness.js';
import { REDIS_URL } from './infra.js';
import { runLoad } from './load.js';
import { spawnTsx, type Child } from './procs.js';

const POLL_MS = 100;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, ms)));

export interface ContenderRun {
  name: string;
  series: DsSeries;
  polls: PlotPoll[];
  notes: string[];
}

async function call(base: string, method: string, p: string, key: string | null, body?: unknown) {
  const res = await fetch(`${base}${p}`, {
    method,
    headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  const parsed = text ? (JSON.parse(text) as Record<string, any>) : {};
  if (res.status >= 300) throw new Error(`${method} ${p}: ${res.status} ${text.slice(0, 300)}`);
  return parsed;
}

/** Calls the member's capacity schedule for, with a margin: the line never runs dry. */
export function ticketsFor(d: Downstream): number {
  // Capacity at most ×1.3 (drift) over the whole run, plus the margin.
  return Math.ceil(((d.workers / d.serviceMs) * 1000 * runMs(d)) / 1000 * 1.3) + 500;
}

async function startRun(dsUrl: string, d: Downstream): Promise<number> {
  return Number((await call(dsUrl, 'POST', '/_ctl/run', null, { member: d.name })).startedAtEpoch);
}

async function finish(dsUrl: string): Promise<DsSeries> {
  for (const t0 = Date.now(); Date.now() - t0 < 5000; await sleep(100)) {
    const s = await call(dsUrl, 'GET', '/_ctl/state', null);
    if (s.inService === 0 && s.backlog === 0) break;
  }
  return (await call(dsUrl, 'GET', '/_ctl/series', null)) as DsSeries;
}

/** Runs the daemon's gate `gate` on a fresh item for member `d`: a cold start, then the schedule. */
export async function runDaemonGate(ctx: BenchContext, daemon: Server, dsUrl: string, d: Downstream, name: string, gate: Record<string, unknown>): Promise<ContenderRun> {
  const base = daemon.url;
  const item = `gate-${d.name}-${name}`;
  await call(base, 'PUT', `/v1/items/${item}`, OPERATOR_KEY, { handler: 'webhook', config: { url: `${dsUrl}/`, timeoutMs: callTimeoutMs(d) }, gate: { mode: 'closed' } });
  const tickets = ticketsFor(d);
  const fill = await runLoad(ctx.tmpDir, { url: base, connections: 50, headers: { authorization: `Bearer ${SERVICE_KEY}` }, gen: { kind: 'join', path: `/v1/items/${item}/tickets`, userPrefix: `${item}-` }, amount: tickets });
  const t0 = await startRun(dsUrl, d);
  await call(base, 'PATCH', `/v1/items/${item}/gate`, OPERATOR_KEY, gate);
  const polls: PlotPoll[] = [];
  let minWaiting = Infinity;
  for (let next = Date.now(); Date.now() < t0 + runMs(d); next += POLL_MS, await sleep(next - Date.now())) {
    const asked = Date.now();
    const v = await call(base, 'GET', `/v1/items/${item}`, OPERATOR_KEY).catch(() => null);
    const c = v?.gate?.controller ?? null;
    minWaiting = Math.min(minWaiting, v?.counts?.waiting ?? Infinity);
    polls.push({ t: (asked - t0) / 1000, limit: c?.limit ?? null, admitted: v?.counts?.admitted ?? null, p50Ms: c?.p50Ms ?? null, baseMs: c?.baseMs ?? null, probing: c?.probing ?? false });
  }
  await call(base, 'PATCH', `/v1/items/${item}/gate`, OPERATOR_KEY, { mode: 'closed' });
  const series = await finish(dsUrl);
  const counts = (await call(base, 'GET', `/v1/items/${item}`, OPERATOR_KEY)).counts;
  await call(base, 'DELETE', `/v1/items/${item}`, OPERATOR_KEY).catch(() => {});
  const notes = [`${tickets} tickets joined (${JSON.stringify(fill.status)}); at the end ${JSON.stringify(counts)}`];
  if (minWaiting <= 0) notes.push('**the line ran dry**');
  return { name, series, polls, notes };
}

/** A BullMQ worker with BullMQ's limiter set for phase 1 (max C per second), calling the downstream. */
export async function runBullLimiter(ctx: BenchContext, dsUrl: string, d: Downstream): Promise<ContenderRun> {
  const prefix = `${ctx.prefix}bull-${d.name}`;
  const c = Math.round((d.workers / d.serviceMs) * 1000);
  const conn = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
  const q = new BullQueue('gate-bull', { connection: conn, prefix, defaultJobOptions: { attempts: 5, backoff: { type: 'exponential', delay: 200 }, removeOnComplete: true, removeOnFail: false } });
  const tickets = ticketsFor(d);
  for (let i = 0; i < tickets; i += 2000) await q.addBulk(Array.from({ length: Math.min(2000, tickets - i) }, (_, j) => ({ name: 'call', data: { userId: `bull-${i + j}` } })));
  const spec: BullContenderSpec = { redisUrl: REDIS_URL, prefix, queue: 'gate-bull', url: `${dsUrl}/`, concurrency: 2 * d.workers + 2, limiter: { max: c, duration: 1000 }, timeoutMs: callTimeoutMs(d) };
  const specFile = path.join(ctx.tmpDir, `bull-${d.name}.json`);
  await writeFile(specFile, JSON.stringify(spec));
  const worker: Child = spawnTsx('bullmq worker', 'bench/lib/gate-bullmq.ts', { args: [specFile], logFile: path.join(ctx.tmpDir, `bullmq-${d.name}.log`) });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('bullmq worker not ready after 30 s')), 30_000);
    worker.proc.stdout!.on('data', (b: Buffer) => {
      if (b.toString().includes('"msg":"ready"')) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  const t0 = await startRun(dsUrl, d);
  worker.proc.kill('SIGUSR2');
  const polls: PlotPoll[] = [];
  for (let next = Date.now(); Date.now() < t0 + runMs(d); next += POLL_MS, await sleep(next - Date.now())) {
    const jc = await q.getJobCounts('active', 'delayed');
    polls.push({ t: (Date.now() - t0) / 1000, limit: null, admitted: (jc.active ?? 0) + (jc.delayed ?? 0), p50Ms: null, baseMs: null, probing: false });
  }
  await worker.stop();
  const series = await finish(dsUrl);
  await q.obliterate({ force: true }).catch(() => {});
  await q.close();
  conn.disconnect();
  return { name: 'bullmq', series, polls, notes: [`Worker { concurrency: ${spec.concurrency}, limiter: { max: ${c}, duration: 1000 } }`] };
}

/** The manual gate an operator would set, knowing phase 1's K and C: K + 25% in flight, C + 10% per second. */
export function tunedManual(d: Downstream): Record<string, unknown> {
  const c = (d.workers / d.serviceMs) * 1000;
  return { mode: 'manual', maxInFlight: Math.ceil(d.workers * 1.25) + 1, rate: Math.round(c * 1.1) };
}
