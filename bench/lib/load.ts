/** Runs one autocannon load in a child process (see load-worker.ts) and returns its result. */
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { LoadResult, LoadSpec } from './load-spec.js';
import { spawnTsx } from './procs.js';

let runs = 0;

export async function runLoad(tmpDir: string, spec: LoadSpec): Promise<LoadResult> {
  const id = ++runs;
  const specPath = path.join(tmpDir, `load-${id}.spec.json`);
  const outPath = path.join(tmpDir, `load-${id}.out.json`);
  await writeFile(specPath, JSON.stringify(spec));
  const child = spawnTsx(`autocannon #${id}`, 'bench/lib/load-worker.ts', { args: [specPath, outPath] });
  const code = await child.exited;
  if (code !== 0) throw new Error(`load generator #${id} exited with ${code}:\n${child.problems.join('\n')}`);
  return JSON.parse(await readFile(outPath, 'utf8')) as LoadResult;
}
