import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll } from 'vitest';

export interface OwnRedis {
  url: string;
  /** SIGKILLs the server: everything in it is lost (no persistence). */
  kill(): Promise<void>;
  /** Starts an empty server on the same port. */
  start(): Promise<void>;
}

/** A redis-server of this test's own on `port`, without persistence; killed after the file. */
export async function ownRedis(port: number): Promise<OwnRedis> {
  let proc: ChildProcess | null = null;
  async function start() {
    const p = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] });
    proc = p;
    let out = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`redis-server did not start:\n${out}`)), 10_000);
      p.stdout!.on('data', (d) => {
        out += d;
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
    const exited = new Promise((resolve) => p.once('exit', resolve));
    p.kill('SIGKILL');
    await exited;
  }
  await start();
  afterAll(kill);
  return { url: `redis://127.0.0.1:${port}`, kill, start };
}
