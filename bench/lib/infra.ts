/** The run's own corner of Redis and Postgres, and what the machine is. */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { Redis } from 'ioredis';
import postgres from 'postgres';

export const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
export const PG_ADMIN_URL = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

export const runTag = () => randomBytes(4).toString('hex');

export async function createScratchDb(name: string): Promise<string> {
  const sql = postgres(PG_ADMIN_URL, { max: 1, onnotice: () => {} });
  try {
    await sql.unsafe(`CREATE DATABASE "${name}"`);
  } finally {
    await sql.end({ timeout: 5 });
  }
  const url = new URL(PG_ADMIN_URL);
  url.pathname = `/${name}`;
  return url.toString();
}

export async function dropScratchDb(name: string): Promise<void> {
  const sql = postgres(PG_ADMIN_URL, { max: 1, onnotice: () => {} });
  try {
    await sql.unsafe(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

export function connectRedis(): Redis {
  return new Redis(REDIS_URL, { maxRetriesPerRequest: 2, lazyConnect: false });
}

/** SCAN+UNLINK every key under the prefix; returns how many were unlinked. */
export async function unlinkPrefix(redis: Redis, prefix: string): Promise<number> {
  let cursor = '0';
  let n = 0;
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${escapeGlob(prefix)}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length) n += await redis.unlink(...keys);
  } while (cursor !== '0');
  return n;
}

/** Sum of MEMORY USAGE (SAMPLES 0: exact) over the keys matching `<literal>*`. */
export async function memoryUsage(redis: Redis, literal: string): Promise<{ keys: number; bytes: number }> {
  let cursor = '0';
  let keys = 0;
  let bytes = 0;
  do {
    const [next, found] = await redis.scan(cursor, 'MATCH', `${escapeGlob(literal)}*`, 'COUNT', 1000);
    cursor = next;
    if (!found.length) continue;
    const pipe = redis.pipeline();
    for (const k of found) pipe.call('MEMORY', 'USAGE', k, 'SAMPLES', '0');
    for (const [err, v] of (await pipe.exec()) ?? []) {
      if (err) throw err;
      bytes += Number(v ?? 0);
    }
    keys += found.length;
  } while (cursor !== '0');
  return { keys, bytes };
}

export async function usedMemory(redis: Redis): Promise<number> {
  const info = await redis.info('memory');
  return Number(/^used_memory:(\d+)/m.exec(info)?.[1] ?? NaN);
}

const escapeGlob = (s: string) => s.replace(/[*?[\]\\]/g, '\\$&');

/** The code under test: HEAD's short hash, and whether src/ differs from it. */
export function codeVersion(cwd: string): string {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src', 'drizzle', 'package.json'], { cwd, encoding: 'utf8' }).trim();
    return `commit ${head}${dirty ? ', with uncommitted changes in src/' : ''}`;
  } catch {
    return 'unknown (no git)';
  }
}

export interface Machine {
  date: string;
  nproc: number;
  cpu: string;
  memory: string;
  node: string;
  redis: string;
}

export async function machine(redis: Redis): Promise<Machine> {
  const cpu = /^model name\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? os.cpus()[0]?.model ?? 'unknown';
  const memKb = Number(/^MemTotal:\s*(\d+)/m.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? os.totalmem() / 1024);
  const info = await redis.info('server');
  return {
    date: execFileSync('date', ['-u'], { encoding: 'utf8' }).trim(),
    nproc: Number(execFileSync('nproc', { encoding: 'utf8' }).trim()),
    cpu,
    memory: `${(memKb / 1024 / 1024).toFixed(1)} GiB`,
    node: process.version,
    redis: /^redis_version:(.*)$/m.exec(info)?.[1]?.trim() ?? 'unknown',
  };
}
