import postgres from 'postgres';
import { Redis } from 'ioredis';
import { withTimeout } from '../kernel/wait.js';
import { PG_HOST, PG_PASSWORD, PG_USER } from './postgres-probe.js';
import { REDIS_HOST } from './redis-probe.js';

/**
 * Who else uses a local store this process started or reused (zero-config: a second daemon on the
 * same machine reuses the first's redis-server and embedded Postgres). A stop leaves a store
 * running while another client is on it: the first daemon's stop took both from under the second,
 * whose sale then read Redis and Postgres as down. The last daemon of the data directory to stop
 * stops them (ensure-redis.ts, ensure-postgres.ts).
 *
 * Counted after this process closed its own connections, which the server may still list for a
 * moment: asked again every 100 ms for up to a second while it sees any. Null when it cannot tell
 * (the stop then goes ahead, as before).
 */
const SETTLE_MS = 1000;
const EVERY_MS = 100;
const REPLY_TIMEOUT_MS = 2000;

async function settled(count: () => Promise<number>): Promise<number | null> {
  const until = Date.now() + SETTLE_MS;
  try {
    for (;;) {
      const n = await count();
      if (n === 0 || Date.now() >= until) return n;
      // (A timer that holds the process: at the end of a stop little else does.)
      await new Promise((r) => setTimeout(r, EVERY_MS));
    }
  } catch {
    return null;
  }
}

/** Client sessions on the Postgres on `port` other than the one asking. */
export async function otherPostgresClients(port: number): Promise<number | null> {
  const sql = postgres({ host: PG_HOST, port, user: PG_USER, password: PG_PASSWORD, database: 'postgres', max: 1, connect_timeout: 2, onnotice: () => {} });
  try {
    return await settled(async () => {
      const [row] = await withTimeout(sql<{ n: number }[]>`select count(*)::int as n from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()`, REPLY_TIMEOUT_MS, 'no reply');
      return row.n;
    });
  } finally {
    await sql.end({ timeout: 1 });
  }
}

/** Clients of the Redis on `port` other than the one asking. */
export async function otherRedisClients(port: number): Promise<number | null> {
  const client = new Redis({ host: REDIS_HOST, port, lazyConnect: true, connectTimeout: 500, maxRetriesPerRequest: 0, retryStrategy: () => null, enableOfflineQueue: false });
  client.on('error', () => {});
  try {
    await withTimeout(client.connect(), REPLY_TIMEOUT_MS, 'no handshake reply');
    return await settled(async () => {
      const list = String(await withTimeout(client.client('LIST'), REPLY_TIMEOUT_MS, 'no reply'));
      return list.split('\n').filter((l) => l.trim()).length - 1;
    });
  } catch {
    return null;
  } finally {
    client.disconnect();
  }
}

/** What a stop that leaves a store running says. */
export const leftRunning = (store: 'redis-server' | 'embedded postgres') => `${store} left running: other clients use it (another daemon); the last daemon of this data directory to stop stops it`;

/** Whether process `pid` is alive (another user's process counts: EPERM). */
export function alive(pid: unknown): boolean {
  if (typeof pid !== 'number' || !Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Whether process `pid` is gone within `ms`, looked at every 100 ms on a timer that holds the
 * process: at the end of a stop nothing else may (with an unref'd sleep Node exited mid-stop, its
 * stop unfinished and its exit code its own).
 */
export async function goneWithin(pid: number, ms: number): Promise<boolean> {
  for (const until = Date.now() + ms; Date.now() < until; await new Promise((r) => setTimeout(r, EVERY_MS))) if (!alive(pid)) return true;
  return !alive(pid);
}
