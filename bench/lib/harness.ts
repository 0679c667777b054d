/** What every scenario gets: the run's settings, its Redis prefix and DB, and process starters. */
import path from 'node:path';
import type { Redis } from 'ioredis';
import { OPERATOR_KEY, SERVICE_KEY } from './api.js';
import { REDIS_URL, type Machine } from './infra.js';
import { runLoad, watchCpu } from './load.js';
import type { LoadResult, LoadSpec } from './load-spec.js';
import { freePort, spawnTsx, waitHealthy, type Child } from './procs.js';

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
  /** A measured load that ran alongside busy outside processes may be repeated once until this time (s into the run). */
  retryUntilS: number;
  log(line: string): void;
}

/** Cores used by processes outside the bench above which a measured load is considered disturbed. */
export const NOISY_CORES = 0.25;

export interface Server {
  url: string;
  child: Child;
  startMs: number;
}

export async function startBareHono(ctx: BenchContext): Promise<Server> {
  const port = await freePort();
  const child = spawnTsx('bare hono', 'bench/bare-hono.ts', { env: { PORT: String(port) }, logFile: path.join(ctx.tmpDir, 'bare-hono.log') });
  const url = `http://127.0.0.1:${port}`;
  watchCpu('server', child.proc.pid);
  return { url, child, startMs: await waitHealthy(child, url) };
}

export async function startDaemon(ctx: BenchContext): Promise<Server> {
  const port = await freePort();
  const child = spawnTsx('floodgate', 'src/main.ts', {
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
      FLOODGATE_AUTO_INSTALL: 'false',
      LOG_LEVEL: 'warn',
    },
  });
  const url = `http://127.0.0.1:${port}`;
  watchCpu('server', child.proc.pid);
  return { url, child, startMs: await waitHealthy(child, url) };
}

export type Measured = LoadResult & { rerun?: string };

/**
 * A warm-up (not reported) and then the measured run of the same load. If processes outside the
 * bench took CPU during it, it is run once more (time allowing) and the quieter run is kept.
 */
export async function measure(ctx: BenchContext, spec: Omit<LoadSpec, 'duration' | 'amount'>, warm: LoadSpec['gen'] = spec.gen): Promise<Measured> {
  if (ctx.warmupS > 0) await runLoad(ctx.tmpDir, { ...spec, gen: warm, duration: ctx.warmupS });
  const first = await runLoad(ctx.tmpDir, { ...spec, duration: ctx.durationS });
  if (first.cpu.other < NOISY_CORES || ctx.elapsedS() + ctx.durationS + 1 > ctx.retryUntilS) return first;
  ctx.log(`  (outside processes used ${first.cpu.other.toFixed(2)} cores during that run: running it again)`);
  const second = await runLoad(ctx.tmpDir, { ...spec, duration: ctx.durationS });
  const [kept, dropped] = second.cpu.other < first.cpu.other ? [second, first] : [first, second];
  return { ...kept, rerun: `run twice because outside processes used ${first.cpu.other.toFixed(2)} cores during the first; kept the quieter (${kept.cpu.other.toFixed(2)} cores outside, ${Math.round(kept.rps)} req/s; the other had ${Math.round(dropped.rps)} req/s)` };
}
