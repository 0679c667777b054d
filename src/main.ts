/**
 * The command line: reads the configuration, starts the daemon (daemon.ts) or runs a command, and
 * turns signals into a graceful stop.
 */
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { describeError } from './api/errors.js';
import { keysForRun, readSettings, runKeysNotice, unknownHere, type Config, type Settings } from './config.js';
import { checkSettings, openCore, startDaemon } from './daemon.js';
import { isTypeFetchFailure } from './db/faults.js';
import { SetupNeeded } from './infra/system-changes.js';
import { stopStartedStores } from './infra/ensure-stores.js';
import { isClusterWorker, processCount, runPrimary } from './processes.js';
import { systemClock } from './kernel/clock.js';
import { createLogger, type Logger } from './kernel/logger.js';

/** `reconcile [itemId]`: rebuilds Redis stock from Postgres (units left = total − rows sold). */
async function reconcileCommand(config: Config, log: Logger, itemId: string | undefined) {
  const core = await openCore(config, log, systemClock);
  try {
    const results = await core.catalog.reconcile({ itemId });
    console.log(JSON.stringify({ reconciled: results }, null, 2));
  } finally {
    await core.stores.close();
  }
}

// (EMFILE/ENFILE: a connection a library opened while every file descriptor was in use.)
const networkCodes = new Set(['ECONNRESET', 'EPIPE', 'ECONNREFUSED', 'ETIMEDOUT', 'ECONNABORTED', 'EHOSTUNREACH', 'ENETUNREACH', 'EMFILE', 'ENFILE']);

async function main() {
  let settings: Settings;
  try {
    // A worker of FLOODGATE_PROCESSES takes the configuration its primary read, .env included: read
    // again, a file edited while the group ran gave a replaced worker other settings than its
    // siblings (another key prefix: an item with two lines, positions 1, 1, 2, 2 …; a review's find).
    settings = readSettings(process.cwd(), undefined, { envFile: !isClusterWorker() });
  } catch (err) {
    console.error(String((err as Error).message));
    // A misspelt name is often why: said here too (the warnings below come only after a valid read).
    for (const { name, suggestion } of unknownHere(process.cwd(), undefined, { envFile: !isClusterWorker() })) console.error(`  ${name}: not a variable floodgate knows (ignored)${suggestion ? `; did you mean ${suggestion}?` : ''}`);
    process.exit(2);
  }
  const { config, envFile } = settings;
  const command = process.argv[2];
  // A command's output is its JSON on stdout; its logs go to stderr.
  const log = createLogger(config.LOG_LEVEL, { stderr: command !== undefined });
  if (envFile.names.length) log.info({ file: envFile.path, variables: envFile.names.length }, 'read .env');
  for (const { name, suggestion } of settings.unknown) log.warn({ variable: name, didYouMean: suggestion ?? undefined }, 'unknown configuration variable ignored');
  if (command === 'reconcile') {
    await reconcileCommand(config, log, process.argv[3]).catch((err) => {
      log.fatal({ err: String(err?.stack ?? err) }, 'reconcile failed');
      process.exit(1);
    });
    return;
  }
  if (command === '--help' || command === '-h' || command === 'help') {
    console.log(
      [
        'floodgate: a queue-scheduler daemon for flash sales',
        '',
        '  node dist/floodgate.mjs                 run the daemon (npm start builds, then runs this)',
        '  node dist/floodgate.mjs reconcile [id]  set Redis stock counters (and lost items) from Postgres, then exit',
        '',
        'Configuration: environment variables, or a .env file in the working directory;',
        'config/floodgate.env.example lists every variable with its default. README.md says the rest.',
      ].join('\n'),
    );
    return;
  }
  if (command !== undefined) {
    console.error(`unknown command ${command}; commands: reconcile [itemId], --help`);
    process.exit(2);
  }
  let keys: ReturnType<typeof keysForRun>;
  try {
    // A worker of FLOODGATE_PROCESSES has the keys its primary made or read: as "keys configured",
    // it deleted the primary's .floodgate/dev-keys.env just after the primary announced it.
    keys = isClusterWorker() ? { config, generated: {}, file: null, publish: () => {} } : keysForRun(config, path.resolve(config.FLOODGATE_DATA_DIR));
  } catch (err) {
    console.error(String((err as Error).message));
    process.exit(2);
  }
  try {
    checkSettings(keys.config);
  } catch (err) {
    console.error(`invalid configuration:\n  ${(err as Error).message}`);
    process.exit(2);
  }
  /** The run's keys written (or a stale file removed) and shown, once it listens. */
  const publishKeys = () => {
    try {
      keys.publish();
    } catch (err) {
      log.error({ err: String(err), file: keys.file }, 'keys file not written');
    }
    if (keys.file) {
      log.warn({ roles: Object.keys(keys.generated), file: keys.file }, 'no keys configured; made keys for this run (development mode)');
      process.stderr.write(`${runKeysNotice(keys, process.cwd())}\n`);
    }
  };
  // A promise nobody awaited, or a socket error nobody listened for (a store's connection reset
  // under a library that forgot its handler: db/faults.ts, isTypeFetchFailure), must not take the
  // daemon down mid-sale: every state it keeps lives in Redis and Postgres, and the loops recover.
  // Anything else uncaught is a bug whose state cannot be trusted: log it and exit (a supervisor
  // restarts us; nothing is lost). Installed before the start, which already talks to the stores.
  process.on('unhandledRejection', (err) =>
    isTypeFetchFailure(err) ? log.warn({ err: describeError(err) }, 'postgres connection lost while fetching types (postgres.js left it unhandled)') : log.error({ err: describeError(err) }, 'unhandled rejection'),
  );
  // What libraries print themselves (BullMQ's and ioredis's warnings) goes through process.stdout
  // and stderr, whose failed writes (a full disk under the log file, a reader gone) were uncaught
  // errors that ended the daemon (exit 1 at its first such line): dropped, as pino's (logger.ts).
  for (const out of [process.stdout, process.stderr]) out.on('error', () => {});
  process.on('uncaughtException', (err) => {
    if (networkCodes.has((err as { code?: string }).code ?? '')) return log.error({ err: describeError(err) }, 'uncaught network error');
    log.fatal({ err: describeError(err) }, 'uncaught exception; exiting');
    process.exit(1);
  });
  const processes = processCount(config.FLOODGATE_PROCESSES);
  // One handler per signal for the whole life of the process, which asks what the process is
  // doing: removed at the end of the start and added again for the run, the signal handle closed
  // in between and a SIGTERM that came as the start finished was lost (the daemon served on until
  // a SIGKILL; 1 in 24 tries in a review); with `once`, a second signal during the start took
  // Node's default (death), leaving an embedded Postgres running.
  let stop: ((signal: string) => void) | null = null;
  let stoppingStart = false;
  // A signal while the daemon starts, or a start that fails, stops the servers it started (an
  // embedded Postgres, a redis-server) before the exit: they outlived it, and the next start
  // reused them and never stopped them.
  const duringStart = (signal: string) => {
    if (stoppingStart) return;
    stoppingStart = true;
    // (Exit 0: nothing ran yet, so nothing was cut short; a group's primary reads a worker's 1 as such.)
    log.info({ signal }, 'stop requested while starting; stopping what was started');
    void stopStartedStores().finally(() => process.exit(0));
  };
  const onSignal = (signal: string) => (stop ? stop(signal) : duringStart(signal));
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));
  // What the machine lacks is said plainly; anything else is a bug, with its stack.
  const failedToStart = async (err: unknown): Promise<never> => {
    log.fatal({ err: err instanceof SetupNeeded ? err.message : String((err as Error)?.stack ?? err) }, 'failed to start');
    await stopStartedStores();
    process.exit(1);
  };
  if (processes > 1 && !isClusterWorker()) {
    const stopPrimary = await runPrimary(keys.config, log, processes, publishKeys).catch(failedToStart);
    if (!stoppingStart) stop = stopPrimary;
    return;
  }
  const daemon = await startDaemon(keys.config, log).catch(failedToStart);
  if (!stoppingStart) publishKeys();
  let stopping = false;
  const shutdown = (signal: string) => {
    // Once: a stop signalled to a whole process group reaches a worker of FLOODGATE_PROCESSES twice
    // (from the group, then from its primary). With the handler gone after the first, the second
    // killed the draining worker mid-job (Node's default for SIGTERM).
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutdown requested');
    const force = setTimeout(() => {
      log.error('shutdown timed out; exiting');
      process.exit(1);
    }, config.FLOODGATE_SHUTDOWN_MS);
    force.unref();
    daemon.stop({ exiting: true }).then(
      // Jobs dropped because the stop budget ran out: the exit says so, as a forced exit does.
      ({ jobsCutShort }) => process.exit(jobsCutShort ? 1 : 0),
      (err) => {
        log.error({ err: String(err) }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  // (A stop asked for during the start is under way already: it exits.)
  if (!stoppingStart) stop = shutdown;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) void main();
