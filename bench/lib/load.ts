/** Runs one autocannon load in a child process (see load-worker.ts) and returns its result. */
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { LoadResult, LoadSpec } from './load-spec.js';
import { spawnTsx } from './procs.js';

let runs = 0;
const watched: Record<string, number | undefined> = {};

/** Processes whose CPU use each load reports (e.g. server, redis); undefined stops watching. */
export function watchCpu(name: string, pid: number | undefined): void {
  watched[name] = pid;
}

/** `maxS`: stop the load after this many seconds even if `amount` is not reached yet. */
export async function runLoad(tmpDir: string, spec: LoadSpec, opts: { maxS?: number } = {}): Promise<LoadResult> {
  const id = ++runs;
  const specPath = path.join(tmpDir, `load-${id}.spec.json`);
  const outPath = path.join(tmpDir, `load-${id}.out.json`);
  await writeFile(specPath, JSON.stringify({ ...spec, watchPids: { ...watched, ...spec.watchPids } }));
  const child = spawnTsx(`autocannon #${id}`, 'bench/lib/load-worker.ts', { args: [specPath, outPath] });
  const cap = opts.maxS ? setTimeout(() => child.proc.kill('SIGTERM'), opts.maxS * 1000) : null;
  const code = await child.exited;
  if (cap) clearTimeout(cap);
  if (code !== 0) throw new Error(`load generator #${id} exited with ${code}:\n${child.problems.join('\n')}`);
  return JSON.parse(await readFile(outPath, 'utf8')) as LoadResult;
}
