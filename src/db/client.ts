import path from 'node:path';
import { fileURLToPath } from 'node:url';
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

const migrationsFolder = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../drizzle');

export function connectDb(url: string, opts: { max?: number } = {}): DbHandle {
  const sql = postgres(url, { max: opts.max ?? 10, onnotice: () => {}, connect_timeout: 10 });
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
