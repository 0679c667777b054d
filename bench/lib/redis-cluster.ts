/**
 * A Redis Cluster of the bench's own: `masters` redis-servers on free ports (cluster mode, AOF
 * `everysec` like the single one in redis-server.ts, data in `dir`), joined with
 * `redis-cli --cluster create`; killed with the other children.
 */
import { execFile } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { freePort, spawnChild, type Child } from './procs.js';

export interface OwnCluster {
  /** `host:port,…`: FLOODGATE_REDIS_CLUSTER. */
  seeds: string;
  children: Child[];
}

export async function startOwnCluster(dir: string, masters = 3): Promise<OwnCluster> {
  const ports: number[] = [];
  for (let i = 0; i < masters; i++) ports.push(await freePort());
  const children = await Promise.all(
    ports.map(async (port) => {
      const d = path.join(dir, `cluster-${port}`);
      await mkdir(d, { recursive: true });
      const args = ['--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes', '--cluster-node-timeout', '2000', '--save', '', '--appendonly', 'yes', '--appendfsync', 'everysec', '--dir', d, '--maxmemory-policy', 'noeviction'];
      const child = spawnChild(`redis cluster ${port}`, 'redis-server', args, { logFile: path.join(d, 'redis.log') });
      await until(() => ping(port));
      return child;
    }),
  );
  await promisify(execFile)('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-yes'], { timeout: 30_000 });
  await until(async () => (await Promise.all(ports.map((p) => info(p)))).every((i) => i.includes('cluster_state:ok')));
  return { seeds: ports.map((p) => `127.0.0.1:${p}`).join(','), children };
}

async function once<T>(port: number, fn: (r: Redis) => Promise<T>): Promise<T> {
  const r = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  r.on('error', () => {});
  try {
    await r.connect();
    return await fn(r);
  } finally {
    r.disconnect();
  }
}
const ping = (port: number) => once(port, async (r) => (await r.ping()) === 'PONG').catch(() => false);
const info = (port: number) => once(port, (r) => r.cluster('INFO') as Promise<string>).catch(() => '');

async function until(ok: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  for (const end = Date.now() + timeoutMs; !(await ok()); ) {
    if (Date.now() > end) throw new Error('redis cluster did not come up');
    await new Promise((r) => setTimeout(r, 100));
  }
}
