import postgres from 'postgres';
import type { Logger } from '../kernel/logger.js';

/** Where and as whom the embedded server listens (TCP on loopback, password auth). */
export const PG_HOST = '127.0.0.1';
export const PG_USER = 'postgres';
export const PG_PASSWORD = 'postgres';

/** `ours`: a server that takes the embedded credentials (e.g. left by a killed daemon); `other`: something else on the port. */
export type PostgresProbe = { state: 'free' } | { state: 'ours'; dataDirectory: string } | { state: 'other'; error: string };

export async function probePostgres(port: number): Promise<PostgresProbe> {
  const sql = connect(port, 'postgres', 2);
  try {
    const [row] = await sql<{ dir: string }[]>`select current_setting('data_directory') as dir`;
    return { state: 'ours', dataDirectory: row.dir };
  } catch (err) {
    if ((err as { code?: string }).code === 'ECONNREFUSED') return { state: 'free' };
    return { state: 'other', error: err instanceof Error ? err.message : String(err) };
  } finally {
    await sql.end({ timeout: 1 });
  }
}

export async function ensureDatabase(port: number, database: string, log: Logger): Promise<void> {
  const sql = connect(port, 'postgres', 5);
  try {
    const rows = await sql`select 1 from pg_database where datname = ${database}`;
    if (rows.length > 0) return;
    try {
      await sql`create database ${sql(database)}`;
      log.info({ database }, 'created database');
    } catch (err) {
      // Another daemon starting at the same time may have created it first.
      if ((err as { code?: string }).code !== '42P04') throw err;
    }
  } finally {
    await sql.end({ timeout: 1 });
  }
}

function connect(port: number, database: string, connectTimeoutS: number): postgres.Sql {
  return postgres({ host: PG_HOST, port, user: PG_USER, password: PG_PASSWORD, database, max: 1, connect_timeout: connectTimeoutS, onnotice: () => {} });
}
