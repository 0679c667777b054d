import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { afterAll } from 'vitest';

export async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise((r) => srv.close(r));
  return port;
}

/**
 * A redis-server of this test's own (AOF on, in a temporary folder), so a test can kill it and
 * start it again from its AOF. Stopped and removed after the file.
 */
export async function ownRedis(opts: { appendfsync?: 'always' | 'everysec' } = {}) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fg-redis-'));
  const port = await freePort();
  let proc: ChildProcess | null = null;
  const url = `redis://127.0.0.1:${port}`;
  async function start() {
    proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--appendfsync', opts.appendfsync ?? 'always', '--save', ''], { stdio: 'ignore' });
    const probe = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    for (let i = 0; ; i++) {
      try {
        await probe.connect();
        // Loading the AOF answers LOADING until done.
        if ((await probe.ping()) === 'PONG') break;
      } catch {
        if (i > 200) throw new Error('redis-server did not start');
        probe.disconnect();
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    probe.disconnect();
  }
  async function kill() {
    const p = proc;
    proc = null;
    if (!p || p.exitCode !== null) return;
    await new Promise<void>((r) => {
      p.once('exit', () => r());
      p.kill('SIGKILL');
    });
  }
  await start();
  afterAll(async () => {
    await kill();
    rmSync(dir, { recursive: true, force: true });
  });
  return { url, port, start, kill };
}
