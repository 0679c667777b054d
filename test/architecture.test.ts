import { readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const src = path.resolve(import.meta.dirname, '../src');

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = path.join(dir, f);
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : [];
  });
}

const moduleOf = (file: string) => path.relative(src, file).split(path.sep)[0].replace(/\.ts$/, '');

function imports(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  return [...text.matchAll(/from '(\.[^']+)'/g)].map((m) => path.resolve(path.dirname(file), m[1]).replace(/\.js$/, '.ts'));
}

/** Which top-level folders each folder may import (docs/design-notes.md: dependencies point one way). */
const allowed: Record<string, string[]> = {
  kernel: [],
  queue: ['kernel'],
  db: ['kernel'],
  infra: ['kernel'],
  service: ['kernel', 'queue', 'db'],
  scheduler: ['kernel', 'queue', 'service', 'db'],
  catalog: ['kernel', 'queue', 'service', 'db', 'scheduler'],
  access: ['kernel', 'queue', 'db'],
  tokens: ['kernel', 'queue', 'db'],
  api: ['kernel', 'queue', 'service', 'scheduler', 'catalog', 'access', 'tokens'],
  config: [],
  daemon: ['*'],
  main: ['config', 'daemon', 'kernel', 'api', 'infra'],
};

describe('module boundaries', () => {
  it('imports only along the allowed directions, and nothing reads process.env outside config', () => {
    const bad: string[] = [];
    for (const f of files(src)) {
      const from = moduleOf(f);
      const may = allowed[from] ?? [];
      for (const target of imports(f)) {
        const to = moduleOf(target);
        if (to !== from && !may.includes('*') && !may.includes(to)) bad.push(`${path.relative(src, f)} → ${to}`);
      }
      if (from !== 'config' && /process\.env/.test(readFileSync(f, 'utf8'))) bad.push(`${path.relative(src, f)} reads process.env`);
    }
    expect(bad).toEqual([]);
  });

  it('has no import cycles', () => {
    const graph = new Map(files(src).map((f) => [f, imports(f)]));
    const state = new Map<string, 'visiting' | 'done'>();
    const cycles: string[] = [];
    const visit = (f: string, trail: string[]) => {
      if (state.get(f) === 'done') return;
      if (state.get(f) === 'visiting') {
        cycles.push([...trail.slice(trail.indexOf(f)), f].map((x) => path.relative(src, x)).join(' → '));
        return;
      }
      state.set(f, 'visiting');
      for (const g of graph.get(f) ?? []) visit(g, [...trail, f]);
      state.set(f, 'done');
    };
    for (const f of graph.keys()) visit(f, []);
    expect(cycles).toEqual([]);
  });
});
