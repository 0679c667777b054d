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
  log(line: string): void;
}

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

/** A warm-up (not reported) and then the measured run of the same load. */
export async function measure(ctx: BenchContext, spec: Omit<LoadSpec, 'duration' | 'amount'>, warm: LoadSpec['gen'] = spec.gen): Promise<LoadResult> {
  if (ctx.warmupS > 0) await runLoad(ctx.tmpDir, { ...spec, gen: warm, duration: ctx.warmupS });
  return runLoad(ctx.tmpDir, { ...spec, duration: ctx.durationS });
}
