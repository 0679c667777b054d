/** Runs autocannon loads in a child process (see load-worker.ts) and returns their results. */
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { LoadResult, LoadSpec } from './load-spec.js';
import { spawnTsx } from './procs.js';

let runs = 0;
const watched: Record<string, number | undefined> = {};

/** Processes whose CPU use each load reports (e.g. redis); undefined stops watching. */
export function watchCpu(name: string, pid: number | undefined): void {
  watched[name] = pid;
}

/**
 * Runs the loads one after the other in one generator process (no start-up cost between them).
 * `maxS`: stop after this many seconds even if an `amount` is not reached yet (later loads are skipped).
 */
export async function runLoads(tmpDir: string, specs: LoadSpec[], opts: { maxS?: number } = {}): Promise<LoadResult[]> {
  const id = ++runs;
  const specPath = path.join(tmpDir, `load-${id}.spec.json`);
  const outPath = path.join(tmpDir, `load-${id}.out.json`);
  await writeFile(specPath, JSON.stringify(specs.map((s) => ({ ...s, watchPids: { ...watched, ...s.watchPids } }))));
  const child = spawnTsx(`autocannon #${id}`, 'bench/lib/load-worker.ts', { args: [specPath, outPath] });
  const cap = opts.maxS ? setTimeout(() => child.proc.kill('SIGTERM'), opts.maxS * 1000) : null;
  const code = await child.exited;
  if (cap) clearTimeout(cap);
  if (code !== 0) throw new Error(`load generator #${id} exited with ${code}:\n${child.problems.join('\n')}`);
  return JSON.parse(await readFile(outPath, 'utf8')) as LoadResult[];
}

export async function runLoad(tmpDir: string, spec: LoadSpec, opts: { maxS?: number } = {}): Promise<LoadResult> {
  const [r] = await runLoads(tmpDir, [spec], opts);
  if (!r) throw new Error('load generator returned no result');
  return r;
}
