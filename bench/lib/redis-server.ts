/**
 * A redis-server of the bench's own (AOF on, `appendfsync everysec`, data in `dir`, a free port),
 * so a scenario can SIGKILL it and start it again from its AOF. Killed with the other children.
 */
import { Redis } from 'ioredis';
import path from 'node:path';
import { freePort, spawnChild, type Child } from './procs.js';

export interface OwnRedis {
  readonly url: string;
  readonly port: number;
  readonly child: Child;
  /** SIGKILL: no shutdown, no final fsync; what the AOF holds is what survives. */
  kill9(): Promise<void>;
  /** Starts it again on the same port and directory (it loads the AOF) and waits until it answers. */
  restart(): Promise<void>;
}

export async function startOwnRedis(dir: string): Promise<OwnRedis> {
  const port = await freePort();
  const url = `redis://127.0.0.1:${port}`;
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'yes', '--appendfsync', 'everysec', '--dir', dir, '--maxmemory-policy', 'noeviction'];
  let starts = 0;
  const spawn = async () => {
    const child = spawnChild('redis-server', 'redis-server', args, { logFile: path.join(dir, `redis-${++starts}.log`) });
    await waitPing(url, child);
    return child;
  };
  let child = await spawn();
  return {
    url,
    port,
    get child() {
      return child;
    },
    async kill9() {
      child.proc.kill('SIGKILL');
      await child.exited;
    },
    async restart() {
      child = await spawn();
    },
  };
}

/** Until PING answers (and the AOF is loaded: a loading server answers -LOADING). */
async function waitPing(url: string, child: Child, timeoutMs = 30_000): Promise<void> {
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    if (!child.alive()) throw new Error(`redis-server exited at start:\n${child.problems.slice(-10).join('\n')}`);
    const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, enableOfflineQueue: false });
    r.on('error', () => {});
    try {
      await r.connect();
      if ((await r.ping()) === 'PONG') return;
    } catch {
      /* not up yet */
    } finally {
      r.disconnect();
    }
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new Error(`redis-server on ${url} not answering after ${timeoutMs} ms`);
}
