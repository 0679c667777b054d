/** What every scenario gets: the run's settings, its Redis prefix and DB, and process starters. */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Redis } from 'ioredis';
import { OPERATOR_KEY, SERVICE_KEY } from './api.js';
import { REDIS_URL, type Machine } from './infra.js';
import { runLoads } from './load.js';
import type { LoadResult, LoadSpec } from './load-spec.js';
import { percentile } from './stats.js';
import { freePort, spawnNode, spawnTsx, waitHealthy, type Child } from './procs.js';

export interface BenchContext {
  tmpDir: string;
  redis: Redis;
  prefix: string;
  databaseUrl: string;
  machine: Machine;
  /** Seconds per measured load (BENCH_DURATION, default 10) and per warm-up before it. */
  durationS: number;
  warmupS: number;
  /** Soft limit for the whole run (BENCH_BUDGET, default 225 s); steps that can stretch or repeat fit themselves into it. */
  budgetS: number;
  elapsedS(): number;
  log(line: string): void;
}

export interface ScenarioOutput {
  /** The run's tables and notes (markdown, headings from ### down). */
  markdown: string;
}

export interface Scenario {
  title: string;
  /** Hard limit for the whole run when BENCH_TIMEOUT is not set (s; default 300). */
  timeoutS?: number;
  run(ctx: BenchContext): Promise<ScenarioOutput>;
}

/** Cores used by processes outside the bench above which a measurement is flagged as disturbed. */
export const NOISY_CORES = 0.25;

export interface Server {
  url: string;
  child: Child;
  startMs: number;
}

/** A load spec without its length; `tag` names the slice (`w` warm-up, `0`, `1`, …) so joins can use fresh users in each. */
export type SpecFor = (tag: string) => Omit<LoadSpec, 'duration' | 'amount'>;

/** The load against `server`, its CPU accounted as the server's. */
export const against = (server: Server, spec: Omit<LoadSpec, 'duration' | 'amount' | 'url'>): SpecFor => (tag) => {
  const gen = spec.gen.kind === 'join' ? { ...spec.gen, userPrefix: `${spec.gen.userPrefix}${tag}-` } : spec.gen;
  return { ...spec, gen, url: server.url, watchPids: { ...spec.watchPids, server: server.child.proc.pid } };
};

/** `env`: variants of the bare app (see bench/bare-hono.ts), e.g. BARE_BODY_LIMIT=1. */
export async function startBareHono(ctx: BenchContext, env: Record<string, string> = {}): Promise<Server> {
  const port = await freePort();
  const child = spawnTsx('bare hono', 'bench/bare-hono.ts', { env: { ...env, PORT: String(port) }, logFile: path.join(ctx.tmpDir, 'bare-hono.log') });
  const url = `http://127.0.0.1:${port}`;
  return { url, child, startMs: await waitHealthy(child, url) };
}

/** The heap flags `npm start` gives the daemon (package.json's start script): a bench measures the daemon as it runs. */
export const START_NODE_ARGS: string[] = (JSON.parse(readFileSync(path.join(import.meta.dirname, '../../package.json'), 'utf8')) as { scripts: { start: string } }).scripts.start.match(/--max-semi-space-size=\d+/g) ?? [];

/** `env` overrides the daemon's environment (e.g. REDIS_URL and DATABASE_URL of stores the scenario controls); `file`: another build of it, `nodeArgs`: node flags instead of `npm start`'s heap flags (an A/B). */
export async function startDaemon(ctx: BenchContext, env: Record<string, string> = {}, file = 'dist/floodgate.mjs', nodeArgs: string[] = START_NODE_ARGS): Promise<Server> {
  const port = await freePort();
  const child = spawnNode('floodgate', file, {
    nodeArgs,
    logFile: path.join(ctx.tmpDir, 'daemon.log'),
    env: {
      PORT: String(port),
      HOST: '127.0.0.1',
      REDIS_URL,
      DATABASE_URL: ctx.databaseUrl,
      FLOODGATE_REDIS_PREFIX: ctx.prefix,
      FLOODGATE_SERVICE_KEYS: SERVICE_KEY,
      FLOODGATE_OPERATOR_KEYS: OPERATOR_KEY,
      FLOODGATE_DATA_DIR: path.join(ctx.tmpDir, 'data'),
      FLOODGATE_PROVISION: 'off',
      // BENCH_LOG_LEVEL=info (with BENCH_KEEP_TMP=1) keeps the daemon's full log in the run's folder.
      LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'warn',
      ...env,
    },
  });
  const url = `http://127.0.0.1:${port}`;
  return { url, child, startMs: await waitHealthy(child, url) };
}

export type Measured = LoadResult & {
  /** Statuses summed over every load of the measurement, warm-up included (for checks at the server). */
  allStatus: Record<string, number>;
  loads: number;
  /** The measured slices, in order (round i of A pairs with round i of B). */
  slices: LoadResult[];
};

/**
 * Two loads compared with each other, in alternating slices (A B A B …, `rounds` each, about
 * ctx.durationS in total per load) after one warm-up each, all from one generator process, so
 * that outside disturbances and drift fall on both alike. Both servers stay up; the idle one costs
 * next to nothing. Req/s is over the slices' total time, latency percentiles over all their
 * responses, CPU time-weighted; `pairRatio` gives the per-round view.
 */
export async function measurePair(ctx: BenchContext, a: SpecFor, b: SpecFor, rounds: number): Promise<[Measured, Measured]> {
  const slice = Math.max(1, Math.round(ctx.durationS / rounds));
  const specs: LoadSpec[] = [];
  if (ctx.warmupS > 0) specs.push({ ...a('w'), duration: ctx.warmupS }, { ...b('w'), duration: ctx.warmupS });
  const files: string[] = [];
  for (let i = 0; i < rounds; i++) {
    for (const [k, f] of [['a', a], ['b', b]] as const) {
      const latencyFile = path.join(ctx.tmpDir, `slice-${Date.now()}-${k}${i}.lat`);
      files.push(latencyFile);
      specs.push({ ...f(String(i)), duration: slice, latencyFile });
    }
  }
  const out = await runLoads(ctx.tmpDir, specs);
  const warm = ctx.warmupS > 0 ? out.splice(0, 2) : [];
  const lats = await Promise.all(
    files.map(async (f) => {
      const buf = await readFile(f);
      return new Float64Array(buf.buffer, buf.byteOffset, buf.byteLength / 8);
    }),
  );
  const pick = <T>(xs: T[], k: 0 | 1) => xs.filter((_, i) => i % 2 === k);
  return [merge(pick(out, 0), pick(lats, 0), warm.slice(0, 1)), merge(pick(out, 1), pick(lats, 1), warm.slice(1))];
}

/** Per round, f(b's slice) ÷ f(a's slice): the median and the range. */
export function pairRatio(a: Measured, b: Measured, f: (r: LoadResult) => number): { median: number; min: number; max: number; n: number } {
  const xs = a.slices.map((s, i) => f(b.slices[i]) / f(s)).filter(Number.isFinite).sort((x, y) => x - y);
  const mid = xs.length >> 1;
  const median = xs.length % 2 ? xs[mid] : (xs[mid - 1] + xs[mid]) / 2;
  return { median, min: xs[0], max: xs[xs.length - 1], n: xs.length };
}

function merge(rs: LoadResult[], lats: Float64Array[], warm: LoadResult[]): Measured {
  const all = new Float64Array(lats.reduce((n, l) => n + l.length, 0));
  let off = 0;
  for (const l of lats) {
    all.set(l, off);
    off += l.length;
  }
  all.sort();
  const sumStatus = (xs: LoadResult[]) => {
    const out: Record<string, number> = {};
    for (const r of xs) for (const [code, c] of Object.entries(r.status)) out[code] = (out[code] ?? 0) + c;
    return out;
  };
  const durationS = rs.reduce((t, r) => t + r.durationS, 0);
  const requests = rs.reduce((t, r) => t + r.requests, 0);
  const cpu: Record<string, number> = {};
  for (const r of rs) for (const [k, v] of Object.entries(r.cpu)) cpu[k] = (cpu[k] ?? 0) + (v * r.durationS) / durationS;
  return {
    requests,
    startedAtMs: Math.min(...rs.map((r) => r.startedAtMs)),
    durationS,
    rps: requests / durationS,
    p50: percentile(all, 0.5),
    p90: percentile(all, 0.9),
    p99: percentile(all, 0.99),
    max: all.length ? all[all.length - 1] : 0,
    status: sumStatus(rs),
    non2xx: rs.reduce((t, r) => t + r.non2xx, 0),
    errors: rs.reduce((t, r) => t + r.errors, 0),
    timeouts: rs.reduce((t, r) => t + r.timeouts, 0),
    samples: [],
    cpu,
    allStatus: sumStatus([...warm, ...rs]),
    loads: warm.length + rs.length,
    slices: rs.map((r) => ({ ...r, samples: [] })),
  };
}
