/**
 * A load (see load-worker.ts) that can be stopped from outside: the flash-sale scenario polls for as
 * long as the sale runs, which is not known when the load starts. Same child and result as runLoad.
 */
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { LoadResult, LoadSpec } from './load-spec.js';
import { spawnTsx } from './procs.js';

/** How long a worker takes to start (node, tsx, autocannon): about a second of one core. */
export const WORKER_START_MS = 1_500;
/** A stopped load runs at least this long, so that it has something to report. */
const MIN_RUN_MS = 2_000;
let runs = 0;

export interface RunningLoad {
  /** The result; null when the load was stopped before its worker could report (too short). */
  done: Promise<LoadResult | null>;
  /** Ends the load (at the earliest MIN_RUN_MS after its start) and waits for its result. */
  stop(): Promise<LoadResult | null>;
}

export function startLoad(tmpDir: string, spec: LoadSpec): RunningLoad {
  const id = ++runs;
  const specPath = path.join(tmpDir, `flash-load-${id}.spec.json`);
  const outPath = path.join(tmpDir, `flash-load-${id}.out.json`);
  const startedAt = Date.now();
  let stopping = false;
  let kill: () => void = () => {};
  const done = (async () => {
    // The worker takes a list of loads run one after the other, and answers a list of results.
    await writeFile(specPath, JSON.stringify([spec]));
    const child = spawnTsx(`autocannon flash #${id}`, 'bench/lib/load-worker.ts', { args: [specPath, outPath] });
    kill = () => child.proc.kill('SIGTERM');
    if (stopping) kill();
    const code = await child.exited;
    if (code !== 0) {
      if (stopping) return null;
      throw new Error(`load generator flash #${id} exited with ${code}:\n${child.problems.join('\n')}`);
    }
    const out = JSON.parse(await readFile(outPath, 'utf8')) as LoadResult[] | LoadResult;
    return (Array.isArray(out) ? out[0] : out) ?? null;
  })();
  done.catch(() => {}); // reported to whoever awaits it; never an unhandled rejection meanwhile
  return {
    done,
    async stop() {
      const wait = MIN_RUN_MS - (Date.now() - startedAt);
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      stopping = true;
      kill();
      return done;
    },
  };
}
