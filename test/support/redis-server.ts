import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { afterAll } from 'vitest';
import { trackChild } from './children.js';
import { freePort } from './proxy.js';

export interface OwnRedis {
  url: string;
  port: number;
  /** SIGKILLs the server: what it had not written to its AOF (or everything, without one) is lost. */
  kill(): Promise<void>;
  /** Starts the server again on the same port: from its AOF when it has one, else empty. */
  start(): Promise<void>;
  /** SIGSTOP / SIGCONT: a server that hangs with its connections open (no error reaches clients). */
  pause(): void;
  resume(): void;
  /** Runs `fn` on a client of the test's own, made for it and closed after (a restart ends any older one). */
  admin<T>(fn: (r: Redis) => Promise<T>): Promise<T>;
}

/**
 * A redis-server of this test's own on a free port (or `port`), killed and removed after the file.
 * `appendfsync`: run with an AOF in a temporary folder, so a restart after a kill loads it.
 */
export async function ownRedis(opts: { port?: number; appendfsync?: 'always' | 'everysec'; /** More of redis-server's arguments. */ args?: string[] } = {}): Promise<OwnRedis> {
  const port = opts.port ?? (await freePort());
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fg-redis-'));
  const persistence = opts.appendfsync ? ['--appendonly', 'yes', '--appendfsync', opts.appendfsync] : ['--appendonly', 'no'];
  let proc: ChildProcess | null = null;
  async function start() {
    const p = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', ...persistence, '--daemonize', 'no', ...(opts.args ?? [])], { stdio: ['ignore', 'pipe', 'pipe'] });
    proc = p;
    trackChild(p, 'redis-server');
    let out = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`redis-server did not start:\n${out}`)), 10_000);
      p.stdout!.on('data', (d) => {
        out += d;
        // Printed once the AOF (if any) is loaded.
        if (out.includes('Ready to accept connections')) {
          clearTimeout(timer);
          resolve();
        }
      });
      p.once('exit', (code) => reject(new Error(`redis-server exited ${code}:\n${out}`)));
    });
  }
  async function kill() {
    const p = proc;
    proc = null;
    if (!p || p.exitCode !== null) return;
    p.kill('SIGCONT');
    const exited = new Promise((resolve) => p.once('exit', resolve));
    p.kill('SIGKILL');
    await exited;
  }
  await start();
  afterAll(async () => {
    await kill();
    rmSync(dir, { recursive: true, force: true });
  });
  const url = `redis://127.0.0.1:${port}`;
  async function admin<T>(fn: (r: Redis) => Promise<T>): Promise<T> {
    const r = new Redis(url, { maxRetriesPerRequest: 1 });
    try {
      return await fn(r);
    } finally {
      r.disconnect();
    }
  }
  return { url, port, kill, start, pause: () => void proc?.kill('SIGSTOP'), resume: () => void proc?.kill('SIGCONT'), admin };
}
