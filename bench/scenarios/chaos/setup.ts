/**
 * The chaos scenario's world: a redis-server of its own (AOF everysec, so it can be SIGKILLed and
 * restarted), a TCP proxy in front of it and one in front of the run's scratch database (so either
 * can be cut off or silenced), one daemon pointed at the proxies, and direct connections to both
 * stores for the checks.
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { Redis } from 'ioredis';
import postgres from 'postgres';
import { call, OPERATOR_KEY } from '../../lib/api.js';
import { startDaemon, type BenchContext, type Server } from '../../lib/harness.js';
import { PG_ADMIN_URL } from '../../lib/infra.js';
import { startOwnRedis, type OwnRedis } from '../../lib/redis-server.js';
import { proxyThreadFor, type ProxyThread } from '../../lib/proxy-thread.js';

export type ItemKind = 'seckill' | 'coupon' | 'webhook';

export interface Env {
  ctx: BenchContext;
  redis: OwnRedis;
  /** A connection to the scenario's redis-server (checks, DUMP/RESTORE); survives its restarts. */
  rc: Redis;
  /** In front of Postgres; the daemon's `DATABASE_URL` is its `url`. */
  proxy: ProxyThread;
  /** In front of the redis-server; the daemon's `REDIS_URL` is its `url`. */
  redisProxy: ProxyThread;
  daemon: Server;
  /** Postgres, direct (not through the proxy): the checks' view. */
  sql: postgres.Sql;
  /** The scratch database's name (for ALTER DATABASE and pg_terminate_backend). */
  dbName: string;
  /** Daemons started so far (a daemon that died during a fault is replaced, and the report says so). */
  daemonStarts: number;
  close(): Promise<void>;
}

export async function startEnv(ctx: BenchContext): Promise<Env> {
  const dir = path.join(ctx.tmpDir, 'chaos-redis');
  await mkdir(dir, { recursive: true });
  const redis = await startOwnRedis(dir);
  const pg = new URL(ctx.databaseUrl);
  const proxy = await proxyThreadFor(ctx.databaseUrl);
  const redisProxy = await proxyThreadFor(redis.url);
  const rc = new Redis(redis.url, { maxRetriesPerRequest: 1, enableOfflineQueue: true });
  rc.on('error', () => {});
  const env: Env = {
    ctx,
    redis,
    rc,
    proxy,
    redisProxy,
    daemon: null as unknown as Server,
    sql: postgres(ctx.databaseUrl, { max: 2, onnotice: () => {} }),
    dbName: pg.pathname.slice(1),
    daemonStarts: 0,
    async close() {
      await env.daemon?.child.stop();
      rc.disconnect();
      await env.sql.end({ timeout: 5 });
      await proxy.close();
      await redisProxy.close();
      await redis.child.stop();
    },
  };
  await ensureDaemon(env);
  ctx.log(`chaos: redis-server ${redis.url} (AOF everysec) through proxy :${redisProxy.port}, postgres through proxy :${proxy.port}, daemon ${env.daemon.url}`);
  return env;
}

/** Starts the daemon, or a new one when the last has died (e.g. during a Redis fault). */
export async function ensureDaemon(env: Env): Promise<void> {
  if (env.daemon?.child.alive()) return;
  env.daemon = await startDaemon(env.ctx, { REDIS_URL: env.redisProxy.url, DATABASE_URL: env.proxy.url });
  env.daemonStarts++;
}

/** Runs statements as the admin (database `postgres`), so it works while the scratch db is read-only. */
export async function asAdmin<T>(fn: (sql: postgres.Sql) => Promise<T>): Promise<T> {
  const sql = postgres(PG_ADMIN_URL, { max: 1, onnotice: () => {} });
  try {
    return await fn(sql);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

export interface ItemSpec {
  itemId: string;
  kind: ItemKind;
  /** Units (seckill stock, coupon total); unused for webhook. */
  units: number;
  /** webhook: where tickets are POSTed. */
  url?: string;
}

export async function defineItem(env: Env, spec: ItemSpec): Promise<void> {
  const config =
    spec.kind === 'seckill' ? { stock: spec.units } : spec.kind === 'coupon' ? { total: spec.units, perUser: 1 } : { url: spec.url, timeoutMs: 2000 };
  const r = await call(env.daemon.url, 'PUT', `/v1/items/${spec.itemId}`, OPERATOR_KEY, { handler: spec.kind, config, gate: { mode: 'auto' } });
  if (r.status !== 201 && r.status !== 200) throw new Error(`PUT item ${spec.itemId}: ${r.status} ${JSON.stringify(r.body)}`);
}

/** The Redis keys of one item (its hash tag), as the daemon names them under its prefix. */
export const itemKeyPattern = (env: Env, itemId: string) => `${env.ctx.prefix}{${itemId}}:*`;

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
