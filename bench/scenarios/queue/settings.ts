/** The `queue` scenario's settings (knobs: BENCH_DEPTH, BENCH_FILL_MAX; see bench/run.ts). */
import { SERVICE_KEY } from '../../lib/api.js';
import type { Measured } from '../../lib/harness.js';
import type { LoadResult } from '../../lib/load-spec.js';

export const CONNECTIONS = 100;
export const DEPTH_CONNECTIONS = 10;
export const SMALL = 1_000;
export const BIG = Number(process.env.BENCH_DEPTH ?? 1_000_000);
export const SAMPLE = 1_000;
/** Alternating slices per load (bare vs daemon, 1k vs big line); ratios are the median over rounds. */
export const PAIR_ROUNDS = 5;
export const DEPTH_ROUNDS = 5;
/** Seconds the big fill may take (BENCH_FILL_MAX; 0 = until BENCH_DEPTH is reached; unset = what the budget leaves). */
export const FILL_MAX_ENV = process.env.BENCH_FILL_MAX;
export const PROGRESS_MS = 20_000;
/** Rough cost of starting one load-generator process (tsx), for the time budget. */
export const LOAD_START_S = 1;
export const auth = { authorization: `Bearer ${SERVICE_KEY}` };

/** One row of the throughput table: a measured load, the status it should answer, its ratio to the bare app. */
export interface Row {
  name: string;
  r: Measured;
  expect: string;
  ratio?: { value: number; of: string; target: string; met: boolean };
}

/** Answers other than `expect`, plus connection errors and timeouts. */
export const unexpected = (r: LoadResult, expect: string) =>
  Object.entries(r.status).reduce((n, [code, c]) => (code === expect ? n : n + c), 0) + r.errors + r.timeouts;
