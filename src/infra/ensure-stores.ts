import path from 'node:path';
import type { Logger } from '../kernel/logger.js';
import { ensurePostgres } from './ensure-postgres.js';
import { ensureRedis } from './ensure-redis.js';
import type { RedisTarget } from './redis-client.js';
import { provisionPolicy } from './system-changes.js';

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
  const pg = await ensurePostgres({ url: s.databaseUrl, dataDir: path.join(dataDir, 'postgres'), log, changes, port: s.embeddedPgPort });
  return {
    redis: redis.target,
    pgUrl: pg.url,
    stop: async () => {
      await pg.stop();
      await redis.stop();
    },
  };
}
