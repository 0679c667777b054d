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
  // The door to Redis: keys, Lua, the script runner. It knows no module.
  redis: ['kernel'],
  // The line; the rooms that own other state in Redis (stock in service, the gate and the series
  // in scheduler, invite uses in access) go through the door themselves. Catalog and api use the
  // modules, never the door.
  queue: ['kernel', 'redis'],
  db: ['kernel'],
  // Makes the connections, typed as the door's RedisLike (one server or a cluster).
  infra: ['kernel', 'redis'],
  service: ['kernel', 'redis', 'queue', 'db'],
  scheduler: ['kernel', 'redis', 'queue', 'service', 'db'],
  catalog: ['kernel', 'queue', 'service', 'db', 'scheduler'],
  access: ['kernel', 'redis', 'queue', 'db'],
  tokens: ['kernel', 'redis', 'queue', 'db'],
  api: ['kernel', 'queue', 'service', 'scheduler', 'catalog', 'access', 'tokens'],
  config: [],
  // The primary of several daemon processes (FLOODGATE_PROCESSES): stores, migrations, workers.
  processes: ['kernel', 'db', 'infra', 'config'],
  daemon: ['*'],
  // The command line; db only for what its process-wide fault handlers must recognise (db/faults.ts).
  main: ['config', 'daemon', 'kernel', 'api', 'infra', 'processes', 'db'],
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

  it('keeps Redis keys and Lua behind the door: keys built, scripts defined and Lua files only in src/redis', () => {
    const bad: string[] = [];
    for (const f of files(src)) {
      if (moduleOf(f) === 'redis') continue;
      const text = readFileSync(f, 'utf8');
      // A key spelled by hand: a hash tag, or a name glued onto an item's base.
      if (/\{\$\{/.test(text) || /\.base\s*\+|\$\{[^}]*\.base\}/.test(text)) bad.push(`${path.relative(src, f)} builds a key`);
      if (/defineCommand|\.eval(sha)?\(/.test(text)) bad.push(`${path.relative(src, f)} runs Lua`);
    }
    const lua = (dir: string): string[] =>
      readdirSync(dir).flatMap((f) => (statSync(path.join(dir, f)).isDirectory() ? lua(path.join(dir, f)) : f.endsWith('.lua') ? [path.join(dir, f)] : []));
    for (const f of lua(src)) if (path.dirname(f) !== path.join(src, 'redis', 'lua')) bad.push(`${path.relative(src, f)} is Lua outside redis/lua`);
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
