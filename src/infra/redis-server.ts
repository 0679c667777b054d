import { spawn, type ChildProcess } from 'node:child_process';
import { open, readFile, rm, writeFile } from 'node:fs/promises';
import { makeDataDir } from './system-changes.js';
import path from 'node:path';
import type { Logger } from '../kernel/logger.js';
import { probeRedis, REDIS_HOST } from './redis-probe.js';
import { sleep, tail } from '../kernel/wait.js';
import { leftRunning, otherRedisClients } from './store-users.js';

const START_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 5_000;
const LOG_FILE = 'redis-server.log';

export interface StartedRedis {
  url: string;
  started: boolean;
  stop(): Promise<void>;
}

/** Where a started redis-server's daemon and pid are kept, in its data directory. */
export const ownerFile = (dataDir: string) => path.join(dataDir, 'started-by.json');

/** A redis-server of the daemon's own on `port` (AOF, no eviction), its output in `dataDir`; stopped by stop(). */
export async function startRedisServer(bin: string, port: number, dataDir: string, log: Logger): Promise<StartedRedis> {
  await makeDataDir(dataDir);
  const logPath = path.join(dataDir, LOG_FILE);
  const logFile = await open(logPath, 'a');
  let child: ChildProcess;
  try {
    child = spawn(
      bin,
      [
        '--port', String(port),
        '--bind', REDIS_HOST,
        '--dir', dataDir,
        '--daemonize', 'no',
        '--appendonly', 'yes',
        '--appendfsync', 'everysec',
        '--maxmemory-policy', 'noeviction',
        '--save', '',
      ],
      // Its own process group: a terminal's Ctrl-C (SIGINT to the whole foreground group) stopped
      // it under the daemon's graceful stop, which then could not settle or drain what it ran (a
      // review). The daemon stops it after its own stop, and at its exit whatever the path.
      { detached: true, stdio: ['ignore', logFile.fd, logFile.fd] },
    );
  } finally {
    // The child has its own copy of the descriptor.
    await logFile.close();
  }

  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', () => resolve({ code: null, signal: null }));
  });
  // (At the daemon's exit by any path — an uncaught error, a start that failed — it goes too: in a
  // group of its own, nothing else would stop it.)
  const onProcessExit = () => void (child.exitCode === null && child.signalCode === null && child.kill('SIGTERM'));
  process.once('exit', onProcessExit);
  void exited.then(() => process.removeListener('exit', onProcessExit));
  // Exits during startup surface as the thrown error, after startup only stop() may end it.
  let exitExpected = true;
  void exited.then(({ code, signal }) => {
    if (!exitExpected) log.error({ code, signal, logPath }, 'redis-server exited unexpectedly');
  });

  const url = `redis://${REDIS_HOST}:${port}`;
  let exitedEarly = false;
  void exited.then(() => (exitedEarly = true));
  const deadline = Date.now() + START_TIMEOUT_MS;
  let ready = false;
  while (!ready && !exitedEarly && Date.now() < deadline) {
    ready = (await probeRedis(port)).state === 'pong';
    if (!ready) await sleep(100);
  }
  if (!ready) {
    await killAndWait(child, exited);
    const why = exitedEarly ? 'exited during startup' : `did not answer PING within ${START_TIMEOUT_MS} ms`;
    throw new Error(`redis-server ${why}; last lines of ${logPath}:\n${await tailFile(logPath, 20)}`);
  }

  exitExpected = false;
  // Who started it (ensure-redis.ts adoptOrphan: a later start takes over one that outlived us).
  await writeFile(ownerFile(dataDir), JSON.stringify({ daemonPid: process.pid, redisPid: child.pid, port })).catch(() => {});
  void exited.then(() => rm(ownerFile(dataDir), { force: true }).catch(() => {}));
  log.info({ url, dataDir, pid: child.pid }, 'started redis-server');
  let stopped: Promise<void> | undefined;
  return {
    url,
    started: true,
    stop: () => {
      exitExpected = true;
      stopped ??= (async () => {
        // Another daemon on it (zero-config, beside this one): left running, its owner file kept,
        // so the last daemon to stop finds it ours-and-gone and stops it (ensure-redis.ts).
        // (Not stopped by a forced exit while the others are counted: see ensure-postgres.ts.)
        process.removeListener('exit', onProcessExit);
        const others = await otherRedisClients(port);
        if (others) {
          child.unref();
          log.warn({ url, clients: others }, leftRunning('redis-server'));
          return;
        }
        await killAndWait(child, exited);
        log.info({ url }, 'stopped redis-server');
      })();
      return stopped;
    },
  };
}

async function killAndWait(child: ChildProcess, exited: Promise<unknown>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const timedOut = await Promise.race([exited.then(() => false), sleep(STOP_TIMEOUT_MS).then(() => true)]);
  if (timedOut) {
    child.kill('SIGKILL');
    await exited;
  }
}

async function tailFile(file: string, lines: number): Promise<string> {
  try {
    return tail(await readFile(file, 'utf8'), lines);
  } catch {
    return '(no log output)';
  }
}
