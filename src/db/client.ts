import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { packageRoot } from '../kernel/package-root.js';
import { drizzle, type PostgresJsDatabase } from 'drizzle-orm/postgres-js';
import { migrate } from 'drizzle-orm/postgres-js/migrator';
import postgres from 'postgres';
import * as schema from './schema.js';
import type { Logger } from '../kernel/logger.js';
import { limitIdleTransactions } from './transactions.js';
import { tlsModeOf, watchedSockets } from './watched-sockets.js';

export type Db = PostgresJsDatabase<typeof schema>;

export interface DbHandle {
  db: Db;
  sql: postgres.Sql;
  /** Ends the pool: statements still out get `timeoutSec` (default 5 s), then their connections are closed. */
  close(timeoutSec?: number): Promise<void>;
  /**
   * Ends this pool's idle sessions when a new session may write while they may not: sessions keep
   * the read-only default they started under (`ALTER DATABASE … SET default_transaction_read_only`,
   * a role's), so after it was reset the pool went on reading Postgres as read-only, and the sale
   * stayed paused until postgres.js retired its connections (30–60 min; a review's run). A standby
   * (every session read-only) ends nothing. Returns how many it ended.
   */
  endStaleReadOnly(): Promise<number>;
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

const CONNECT_TIMEOUT_S = 3;

/** How long a connection may wait for Postgres's answer before the daemon gives up on it (FLOODGATE_PG_TIMEOUT_MS). */
export const DEFAULT_PG_TIMEOUT_MS = 15_000;

/** `timeoutMs`: see watchedSockets (db/watched-sockets.ts); 0 waits for every answer however long (postgres.js's own way). */
export function connectDb(url: string, opts: { max?: number; timeoutMs?: number } = {}): DbHandle {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_PG_TIMEOUT_MS;
  const sql = postgres(url, {
    max: opts.max ?? 10,
    onnotice: () => {},
    // A name of this pool's own, so that its sessions can be told apart (endStaleReadOnly); one
    // given in the URL (application_name=…) wins, and then names every pool given it.
    connection: { application_name: `floodgate-${randomBytes(4).toString('hex')}` },
    // connect_timeout (s): an unreachable host fails a query in 3 s rather than postgres.js's 30.
    connect_timeout: CONNECT_TIMEOUT_S,
    backoff: reconnectBackoffSec,
    ...(timeoutMs > 0 ? watchedConnections(url, timeoutMs) : {}),
  } as postgres.Options<{}>);
  // The server ends a transaction of a connection given up as silent once it sat idle half as
  // long (before the waiters on its locks give up their own connections): db/transactions.ts.
  if (timeoutMs > 0) limitIdleTransactions(sql, Math.max(250, Math.round(timeoutMs / 2)));
  const name = String((sql.options as { connection?: Record<string, unknown> }).connection?.application_name ?? '');
  async function endStaleReadOnly(): Promise<number> {
    const fresh = postgres(url, { max: 1, onnotice: () => {}, connect_timeout: CONNECT_TIMEOUT_S, connection: { application_name: `${name}-probe` }, ...(timeoutMs > 0 ? watchedConnections(url, timeoutMs) : {}) } as postgres.Options<{}>);
    try {
      const [{ ro }] = await fresh<{ ro: string }[]>`select current_setting('transaction_read_only') as ro`;
      if (ro !== 'off') return 0;
      const [{ n }] = await fresh<{ n: number }[]>`
        select count(pg_terminate_backend(pid))::int as n from pg_stat_activity
        where datname = current_database() and usename = current_user and application_name = ${name} and state = 'idle' and pid <> pg_backend_pid()
          -- Not one holding an advisory lock: an operator's write holds its scope's lock on a
          -- session of its own (db/op-revs.ts), idle between its statements; ended, the lock went.
          and pid not in (select pid from pg_locks where locktype = 'advisory' and pid is not null)
          -- Only those that started before this one (those after, the default reset, may write).
          and backend_start < (select backend_start from pg_stat_activity where pid = pg_backend_pid())`;
      return n;
    } finally {
      await fresh.end({ timeout: 1 });
    }
  }
  return { db: drizzle(sql, { schema }), sql, close: (timeoutSec = 5) => sql.end({ timeout: timeoutSec }), endStaleReadOnly };
}

/**
 * The options that give postgres.js watched sockets (db/watched-sockets.ts), with its own TLS off
 * since watchedSockets sets up the TLS the URL asks for, where the watch sees past it. A TLS only
 * postgres.js can set up (an options object, direct negotiation) leaves the sockets to it, unwatched.
 */
function watchedConnections(url: string, timeoutMs: number): Partial<postgres.Options<{}>> {
  // The TLS postgres.js reads for this URL (and PGSSL), from its own parser: a client that never connects.
  const parsed = postgres(url, { max: 1 });
  const tlsMode = tlsModeOf(parsed.options);
  void parsed.end({ timeout: 0 });
  return tlsMode === null ? {} : ({ socket: watchedSockets(timeoutMs, tlsMode, CONNECT_TIMEOUT_S * 1000), ssl: false } as Partial<postgres.Options<{}>>);
}

/**
 * Applies the SQL migrations in drizzle/ on a pool of its own; safe to run on every start and from
 * several daemons. Its connections have no answer timeout: a migration may run one long statement
 * (an index on a big table), and waiting for another daemon's migration is a silence too.
 */
/** Whether Postgres at `url` answers a query (the start's wait for it: infra/start-wait.ts); throws what it met. */
export async function pingDb(url: string): Promise<void> {
  // Through the watched sockets, which set up the TLS the URL asks for (the start's wait bounds the
  // try; this watch only has to be there): with postgres.js's own TLS, a server without TLS under
  // sslmode=require read as a connection reset, waited for as an unreachable Postgres for the whole
  // start wait (60 s), then named as such (a review). Now it is SSL_NOT_SUPPORTED, at once.
  const handle = connectDb(url, { max: 1, timeoutMs: 60_000 });
  try {
    await handle.sql`select 1`;
  } finally {
    await handle.close();
  }
}

const NEWER_SCHEMA = 'the database schema is newer than this build: a newer daemon migrated it; this one may not know what changed (run the newer build, or check its release notes)';

export async function migrateDb(url: string, log?: Logger): Promise<void> {
  const handle = connectDb(url, { max: 2, timeoutMs: 0 });
  try {
    // Nothing to apply, nothing written: the migrator's first step creates its schema (a write
    // even when it exists), so a start on a Postgres that takes no writes for now (a standby after
    // a failover, a read-only default) failed there, though no migration was due.
    const due = await migrationsDue(handle.sql);
    // A build older than the schema (a rollback of the daemon's version) runs on it, but says so:
    // it knows none of what the newer migrations changed (a review: it started in silence).
    if (due.newerThanBuild) log?.warn({ databaseAt: due.appliedUpTo, buildKnowsUpTo: due.buildUpTo }, NEWER_SCHEMA);
    if (!due.tags.length) return;
    log?.info({ migrations: due.tags }, 'applying migrations');
    // A session advisory lock keeps two daemons starting together from racing on the migrations table.
    const lockConn = await handle.sql.reserve();
    try {
      const waiting = setTimeout(() => log?.info('waiting for another daemon applying migrations (or a lock one needs)'), 3000);
      let applied: number;
      try {
        await lockConn`select pg_advisory_lock(727274)`;
        // Asked again under the lock: a daemon starting at the same moment may have applied them
        // while this one waited (both said they applied them; a review).
        const now = await migrationsDue(handle.sql);
        applied = now.tags.length;
        // (A newer build, starting meanwhile, may have migrated past this one.)
        if (now.newerThanBuild && !due.newerThanBuild) log?.warn({ databaseAt: now.appliedUpTo, buildKnowsUpTo: now.buildUpTo }, NEWER_SCHEMA);
        if (applied) await migrate(handle.db, { migrationsFolder });
      } finally {
        clearTimeout(waiting);
      }
      if (applied) log?.info({ migrations: applied }, 'migrations applied');
      else log?.info({ migrations: due.tags.length }, 'migrations applied by another daemon meanwhile');
    } finally {
      await lockConn`select pg_advisory_unlock(727274)`.catch(() => {});
      lockConn.release();
    }
  } finally {
    await handle.close();
  }
}

/**
 * The journal's (drizzle/meta/_journal.json) migrations newer than the last one applied, by tag, as
 * drizzle decides them (by time); and whether the database holds one newer than the journal knows
 * (read only).
 */
async function migrationsDue(sql: postgres.Sql): Promise<{ tags: string[]; newerThanBuild: boolean; appliedUpTo: string | null; buildUpTo: string | null }> {
  const journal = JSON.parse(await readFile(path.join(migrationsFolder, 'meta', '_journal.json'), 'utf8')) as { entries: { when: number; tag: string }[] };
  const newest = journal.entries.reduce<{ when: number; tag: string } | null>((a, e) => (!a || e.when > a.when ? e : a), null);
  const iso = (ms: number) => new Date(ms).toISOString();
  const [{ table }] = await sql<{ table: string | null }[]>`select to_regclass('drizzle.__drizzle_migrations')::text as table`;
  const [last] = table ? await sql<{ at: string }[]>`select created_at::text as at from drizzle.__drizzle_migrations order by created_at desc limit 1` : [];
  const at = last ? Number(last.at) : -Infinity;
  return {
    tags: journal.entries.filter((e) => e.when > at).map((e) => e.tag),
    newerThanBuild: !!newest && at > newest.when,
    appliedUpTo: last ? iso(at) : null,
    buildUpTo: newest ? `${newest.tag} (${iso(newest.when)})` : null,
  };
}
