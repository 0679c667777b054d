/** The benches' one report writer: markdown pieces, the run's results file and its section in docs/benchmarks.md. */
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Machine } from './infra.js';
import type { LoadResult } from './load-spec.js';
import { repoRoot } from './procs.js';
import { fmtInt } from './stats.js';

export function mdTable(head: string[], rows: (string | number)[][]): string {
  const line = (cells: (string | number)[]) => `| ${cells.map((c) => String(c).replace(/\|/g, '\\|')).join(' | ')} |`;
  return [line(head), line(head.map(() => '---')), ...rows.map(line)].join('\n');
}

/** One check of a run: what was measured, what it should be, and whether it is. */
export interface Check {
  name: string;
  value: string;
  expected: string;
  ok: boolean;
}

export function checkTable(checks: Check[]): string {
  return mdTable(['check', 'value', 'expected', 'ok'], checks.map((c) => [c.name, c.value, c.expected, c.ok ? 'yes' : '**NO**']));
}

/** HTTP statuses and their counts, `200: 1,234, 410: 5`. */
export const statusCell = (s: Record<string, number>) => Object.entries(s).map(([c, n]) => `${c}: ${fmtInt(n)}`).join(', ') || 'none';

/** A load's CPU in cores: the server, Redis, the load generator, everything else. */
export const cpuCell = (r: Pick<LoadResult, 'cpu'> | null | undefined) => (r ? ['server', 'redis', 'loadgen', 'other'].map((k) => (r.cpu[k] ?? NaN).toFixed(2)).join(' / ') : '');

/** `### title`, then the items as a bullet list (or `empty` when there are none). */
export function mdSection(title: string, items: string[], empty = 'None.'): string[] {
  return [`### ${title}`, '', ...(items.length ? items : [empty]).map((x) => `- ${x}`), ''];
}

export function machineLines(m: Machine): string {
  return [
    `- date: ${m.date}`,
    `- machine: ${m.nproc} cores (nproc), ${m.cpu}, ${m.memory} RAM`,
    `- Node ${m.node}, Redis ${m.redis}`,
  ].join('\n');
}

/** `2025-11-23-1420Z`: the results file name's date, from the run's start. */
export function stamp(d = new Date()): string {
  const iso = d.toISOString();
  return `${iso.slice(0, 10)}-${iso.slice(11, 13)}${iso.slice(14, 16)}Z`;
}

export async function writeResults(scenario: string, when: Date, body: string): Promise<string> {
  const dir = path.join(repoRoot, 'bench', 'results');
  await mkdir(dir, { recursive: true });
  const file = path.join(dir, `${scenario}-${stamp(when)}.md`);
  await writeFile(file, body.endsWith('\n') ? body : `${body}\n`);
  return path.relative(repoRoot, file);
}

const DOC_HEAD = `# Benchmarks

Produced by \`npm run bench\` (the \`queue\` scenario set; \`npm run bench -- <name>\` picks another).
Everything runs on loopback on one machine: the load generator (autocannon, in its own process),
the server under test, and Redis share the same cores. Absolute numbers therefore say little;
each daemon result is given as a ratio to a bare Hono app on @hono/node-server measured in the
same run with the same load (100 connections, pipelining 1), which is what the targets refer to.
Each run's full output is also kept in \`bench/results/\`. Newest run first.

<!-- runs -->
`;

/** Puts the section right under the marker (newest first), keeping earlier runs. */
export async function updateDocs(section: string): Promise<string> {
  const file = path.join(repoRoot, 'docs', 'benchmarks.md');
  let doc = existsSync(file) ? await readFile(file, 'utf8') : DOC_HEAD;
  if (!doc.includes('<!-- runs -->')) doc = `${doc.trimEnd()}\n\n<!-- runs -->\n`;
  doc = doc.replace('<!-- runs -->\n', `<!-- runs -->\n\n${section.trim()}\n`);
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, doc.replace(/\n{3,}/g, '\n\n'));
  return path.relative(repoRoot, file);
}
