/**
 * Brings up what the tests need, once per run, and says what it did:
 * - Redis: REDIS_URL, else a Redis answering on 127.0.0.1:6379, else a redis-server we start.
 * - Postgres: DATABASE_URL, else a server on 127.0.0.1:5432 (trust auth), else an embedded one.
 * Then it makes one migrated template database; each test file clones its own from it, and
 * builds dist/floodgate.mjs as `npm start` does: the tests that start the daemon as a process run
 * that file (test/support/daemon.ts). While the files run, it drops the databases they are done
 * with (see dropFinished), and at the end every one this run made.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import postgres from 'postgres';
import type { TestProject } from 'vitest/node';
import { migrateDb } from '../src/db/client.js';
import { ensurePostgres } from '../src/infra/ensure-postgres.js';
import { ensureRedis } from '../src/infra/ensure-redis.js';
import { systemChanges } from '../src/infra/system-changes.js';
import { createLogger } from '../src/kernel/logger.js';
import { killLeftChildren } from './support/children.js';

declare module 'vitest' {
  export interface ProvidedContext {
    redisUrl: string;
    pgAdminUrl: string;
    pgTemplate: string;
    /** How this run's test databases' names begin (test/support/db.ts). */
    pgDbPrefix: string;
    /** A folder of this run's own (test/support/children.ts lists the servers tests start in it). */
    runDir: string;
  }
}

async function reachable(url: string): Promise<boolean> {
  const sql = postgres(url, { max: 1, connect_timeout: 3, onnotice: () => {} });
  try {
    await sql`select 1`;
    return true;
  } catch {
    return false;
  } finally {
    await sql.end({ timeout: 1 });
  }
}

/** What test/support/db.ts writes as a database's comment when its file is done with it. */
const DONE_COMMENT = 'floodgate test: done';

/**
 * Drops, every 2 s while the files run, the test databases their files are done with, all at once.
 * A DROP DATABASE makes Postgres (≤ 15) force a checkpoint of the whole server; on the shared
 * 2-core machine that took ~1.2 s a drop (64 s of the workers' time in a run), paid in each
 * file's last hook. Here it is paid beside the files, and drops made together share checkpoints.
 */
function dropFinished(adminUrl: string, prefix: string, log: ReturnType<typeof createLogger>) {
  const sql = postgres(adminUrl, { max: 8, onnotice: () => {} });
  const drop = (names: string[]) => Promise.all(names.map((n) => sql.unsafe(`drop database if exists ${n} with (force)`)));
  const mine = (done: boolean) =>
    sql<{ datname: string }[]>`select datname from pg_database where starts_with(datname, ${prefix}) and (${!done} or shobj_description(oid, 'pg_database') = ${DONE_COMMENT})`.then((rows) => rows.map((r) => r.datname));
  let round = Promise.resolve();
  const timer = setInterval(() => {
    round = round.then(async () => void (await drop(await mine(true)))).catch((err) => log.warn({ err }, 'dropping finished test databases failed; the run drops them at its end'));
  }, 2000).unref();
  return async () => {
    clearInterval(timer);
    await round;
    await drop(await mine(false));
    await sql.end({ timeout: 2 });
  };
}

export default async function setup(project: TestProject) {
  const log = createLogger(process.env.TEST_LOG_LEVEL ?? 'info');
  const built = promisify(execFile)(process.execPath, [path.resolve(import.meta.dirname, '../scripts/build.mjs')]);
  built.catch(() => {}); // awaited below; a failure of the stores' start must not leave it unhandled
  const dataDir = path.join(os.tmpdir(), 'floodgate-test-infra');
  // A test run installs nothing: without a Redis answering or redis-server on PATH it stops and says so.
  const redis = await ensureRedis({ url: process.env.REDIS_URL, dataDir: path.join(dataDir, 'redis'), log, changes: systemChanges({ allowed: false, refusal: 'tests install nothing' }), env: process.env, port: process.env.REDIS_URL ? undefined : 6379 });
  let pgAdminUrl = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  let pg: Awaited<ReturnType<typeof ensurePostgres>> | null = null;
  if (!(await reachable(pgAdminUrl))) {
    if (process.env.DATABASE_URL) throw new Error(`DATABASE_URL ${process.env.DATABASE_URL} does not answer`);
    // As root the embedded server runs as the `postgres` account, made if missing (logged).
    pg = await ensurePostgres({ dataDir: path.join(dataDir, 'postgres'), log, port: 54330, database: 'postgres', changes: systemChanges({ allowed: true, log }) });
    pgAdminUrl = pg.url;
  }
  log.info({ redis: redis.url, postgres: pgAdminUrl.replace(/:[^:@/]*@/, ':***@') }, 'test infrastructure ready');

  const template = `fg_tmpl_${randomBytes(4).toString('hex')}`;
  const admin = postgres(pgAdminUrl, { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database ${template}`);
  const tmplUrl = new URL(pgAdminUrl);
  tmplUrl.pathname = `/${template}`;
  await migrateDb(tmplUrl.toString());

  await built;
  const dbPrefix = `fg_t_${template.slice('fg_tmpl_'.length)}_`;
  const dropDatabases = dropFinished(pgAdminUrl, dbPrefix, log);
  process.env.REDIS_URL = redis.url;
  project.provide('redisUrl', redis.url);
  project.provide('pgAdminUrl', pgAdminUrl);
  project.provide('pgTemplate', template);
  project.provide('pgDbPrefix', dbPrefix);
  const runDir = mkdtempSync(path.join(os.tmpdir(), 'floodgate-test-run-'));
  project.provide('runDir', runDir);

  return async () => {
    const left = killLeftChildren(runDir);
    if (left.length) log.warn({ killed: left }, 'servers that test files left running were killed');
    rmSync(runDir, { recursive: true, force: true });
    await dropDatabases();
    await admin.unsafe(`drop database if exists ${template} with (force)`);
    await admin.end({ timeout: 2 });
    await pg?.stop();
    await redis.stop();
  };
}
