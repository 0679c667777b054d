import path from 'node:path';
import { packageRoot } from '../kernel/package-root.js';
import { drizzle, type PostgresJsDatabase } from 'drizzle-orm/postgres-js';
import { migrate } from 'drizzle-orm/postgres-js/migrator';
import postgres from 'postgres';
import * as schema from './schema.js';

export type Db = PostgresJsDatabase<typeof schema>;

export interface DbHandle {
  db: Db;
  sql: postgres.Sql;
  close(): Promise<void>;
}

const migrationsFolder = path.join(packageRoot(), 'drizzle');

/**
 * postgres.js delays a connection attempt after a failed one by a backoff shared by the pool,
 * 3^n/100 s (×0.5–1) up to 20 s; n grows on every failed attempt and resets only on success. A few
 * seconds of outage with traffic pushed it to its cap, so work resumed up to ~20 s after Postgres
 * came back. Here it grows 0.1, 0.2, 0.4 s and stays at 0.5 s: an outage costs a refused attempt
 * per half second, and the first query after Postgres returns connects within about 0.5 s.
 */
export const reconnectBackoffSec = (failures: number) => Math.min(0.05 * 2 ** failures, 0.5);

export function connectDb(url: string, opts: { max?: number } = {}): DbHandle {
  // connect_timeout (s): an unreachable host fails a query in 3 s rather than postgres.js's 30.
  const sql = postgres(url, { max: opts.max ?? 10, onnotice: () => {}, connect_timeout: 3, backoff: reconnectBackoffSec });
  return { db: drizzle(sql, { schema }), sql, close: () => sql.end({ timeout: 5 }) };
}

/** Applies the SQL migrations in drizzle/; safe to run on every start and from several daemons. Needs a pool of at least 2 connections (one holds the lock). */
export async function migrateDb(handle: DbHandle): Promise<void> {
  // A session advisory lock keeps two daemons starting together from racing on the migrations table.
  const lockConn = await handle.sql.reserve();
  try {
    await lockConn`select pg_advisory_lock(727274)`;
    await migrate(handle.db, { migrationsFolder });
  } finally {
    await lockConn`select pg_advisory_unlock(727274)`.catch(() => {});
    lockConn.release();
  }
}
