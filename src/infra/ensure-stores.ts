import path from 'node:path';
import type { Logger } from '../kernel/logger.js';
import { ensurePostgres } from './ensure-postgres.js';
import { ensureRedis } from './ensure-redis.js';
import type { RedisTarget } from './redis-client.js';
import { provisionPolicy, SetupNeeded } from './system-changes.js';

export interface StoreSettings {
  redisUrl?: string;
  /** A Redis Cluster's seed nodes: used as they are, instead of REDIS_URL (nothing is found or started). */
  redisCluster?: { host: string; port: number }[];
  databaseUrl?: string;
  /** Where a started redis-server and embedded Postgres keep their data (`redis/`, `postgres/`). */
  dataDir: string;
  provision: 'auto' | 'off';
  embeddedPgPort: number;
  /** The environment child processes inherit and PATH is searched in. */
  env: NodeJS.ProcessEnv;
}

/**
 * The stops of servers this process started and has not stopped yet: what a signal or a failure
 * during the start must stop before the process exits (main.ts). Without it, a SIGTERM while the
 * daemon was still starting (after its embedded Postgres was up) left that Postgres running, and
 * the next start reused it and never stopped it.
 */
const startedHere = new Set<() => Promise<void>>();

/**
 * A store the start could not use, said as what to fix (SetupNeeded: logged without a stack):
 * which variable, which server (without its password), and what it answered.
 */
export function storeFailure(store: 'redis' | 'postgres', where: string, err: unknown): SetupNeeded {
  // What the server said (a query error's cause: drizzle's own message names only the query).
  const cause = (err as { cause?: { code?: unknown; message?: unknown } })?.cause;
  const e = (typeof cause?.code === 'string' ? cause : err) as { code?: unknown; message?: unknown };
  const why = [typeof e?.code === 'string' ? e.code : null, typeof e?.message === 'string' ? e.message : String(err)].filter(Boolean).join(': ');
  return store === 'redis'
    ? new SetupNeeded(`Redis at ${where} (REDIS_URL, or FLOODGATE_REDIS_CLUSTER) cannot be used: ${why}`)
    : new SetupNeeded(`Postgres at ${where} (DATABASE_URL) cannot be used: ${why}`);
}

/** Stops whatever servers this process started and has not stopped (never throws). */
export async function stopStartedStores(): Promise<void> {
  const stops = [...startedHere];
  startedHere.clear();
  for (const stop of stops) await stop().catch(() => {});
}

/**
 * Redis and Postgres URLs: the configured ones, or local servers found or started, with the
 * machine changed only as the provisioning policy allows (system-changes.ts). `stop()` stops
 * what was started here. What a daemon and the primary of several daemon processes share.
 */
export async function ensureStores(s: StoreSettings, log: Logger) {
  const dataDir = path.resolve(s.dataDir);
  const changes = provisionPolicy(s.provision, { redis: !!s.redisUrl || !!s.redisCluster, postgres: !!s.databaseUrl }, log.child({ module: 'provision' }));
  const redis: { target: RedisTarget; stop: () => Promise<void> } = s.redisCluster
    ? { target: { cluster: s.redisCluster }, stop: async () => {} }
    : await ensureRedis({ url: s.redisUrl, dataDir: path.join(dataDir, 'redis'), log, changes, env: s.env }).then((r) => ({ target: { url: r.url }, stop: r.stop }));
  startedHere.add(redis.stop);
  let pgStarting: (() => Promise<void>) | undefined;
  const pg = await ensurePostgres({
    url: s.databaseUrl,
    dataDir: path.join(dataDir, 'postgres'),
    log,
    changes,
    port: s.embeddedPgPort,
    env: s.env,
    starting: (stop) => void startedHere.add((pgStarting = stop)),
  }).finally(() => pgStarting && startedHere.delete(pgStarting));
  startedHere.add(pg.stop);
  return {
    redis: redis.target,
    pgUrl: pg.url,
    stop: async () => {
      startedHere.delete(pg.stop);
      await pg.stop();
      startedHere.delete(redis.stop);
      await redis.stop();
    },
  };
}
