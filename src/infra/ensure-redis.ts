import { constants as fsConstants } from 'node:fs';
import { access, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../kernel/logger.js';
import { aptInstall } from './apt.js';
import { probeRedis, redisProcessId, REDIS_HOST } from './redis-probe.js';
import { ownerFile, startRedisServer, type StartedRedis } from './redis-server.js';
import { alive, goneWithin, leftRunning, otherRedisClients } from './store-users.js';
import { SetupNeeded, type SystemChanges } from './system-changes.js';

export type EnsuredRedis = StartedRedis;

export interface EnsureRedisOptions {
  url?: string;
  dataDir: string;
  log: Logger;
  /** Whether a missing redis-server may be installed (as root, with apt-get); see system-changes.ts. */
  changes: SystemChanges;
  port?: number;
  /** The environment child processes inherit and PATH is searched in (the daemon passes its own). */
  env: NodeJS.ProcessEnv;
}

const DEFAULT_PORT = 6379;
const INSTEAD = 'set REDIS_URL to an existing Redis';

/**
 * Returns a Redis URL: the configured one; else a Redis answering on the local port; else a
 * redis-server started from PATH; else, when system changes are allowed and we are root, one
 * installed from Debian's package first (whose own service may then answer on the port).
 */
export async function ensureRedis(opts: EnsureRedisOptions): Promise<EnsuredRedis> {
  if (opts.url) return { url: opts.url, started: false, stop: async () => {} };

  const { log } = opts;
  const port = opts.port ?? DEFAULT_PORT;
  const url = `redis://${REDIS_HOST}:${port}`;
  const local = () => {
    log.info({ url }, 'using local redis');
    // A redis-server a daemon of this data directory started and left running for this one (it
    // stopped while this daemon used it): stopped with the last daemon on it.
    const dataDir = path.resolve(opts.dataDir);
    return { url, started: false, stop: async () => void (await stopOrphanIfUnused(dataDir, port, log)) };
  };

  const first = await probeRedis(port);
  if (first.state === 'pong') return (await adoptOrphan(path.resolve(opts.dataDir), port, log)) ?? local();
  if (first.state === 'other') throw portBusyError(port, first.error);

  let bin = await findOnPath('redis-server', opts.env);
  if (!bin) {
    const root = process.getuid?.() === 0;
    if (!opts.changes.allowed || !root) {
      throw new SetupNeeded(
        `redis-server was not found on PATH and no Redis answers on ${REDIS_HOST}:${port}. ` +
          `Install it (Debian/Ubuntu: "apt-get install -y redis-server") or ${INSTEAD}` +
          (opts.changes.allowed ? ' (floodgate installs it itself only when it runs as root).' : ' (floodgate installs nothing: system changes are off).'),
      );
    }
    await aptInstall('redis-server', opts.changes, log, opts.env, INSTEAD);
    bin = await findOnPath('redis-server', opts.env);
    // The Debian package may have started its own service on the default port while installing.
    if ((await probeRedis(port)).state === 'pong') return local();
    if (!bin) throw new Error(`redis-server is still not on PATH after apt-get install; install it yourself or ${INSTEAD}`);
  }
  return startRedisServer(bin, port, path.resolve(opts.dataDir), log);
}

/**
 * The redis-server a daemon started here that outlived it (killed with its whole process group:
 * in a group of its own since a Ctrl-C stopped it under the daemon's graceful stop), taken over
 * as this start's own, so it is stopped when this daemon stops; null when what answers is not one.
 * As a Redis that was running already, it was used and never stopped (a review).
 */
async function adoptOrphan(dataDir: string, port: number, log: Logger): Promise<EnsuredRedis | null> {
  const pid = await orphanOf(dataDir, port);
  if (pid === null) return null;
  // Ours now: a start beside this daemon finds it alive and uses the Redis without taking it over
  // (a review: a second takeover's stop took it from the first's sale).
  await writeFile(ownerFile(dataDir), JSON.stringify({ daemonPid: process.pid, redisPid: pid, port }));
  const url = `redis://${REDIS_HOST}:${port}`;
  log.warn({ url, pid }, 'redis-server a stopped daemon started is still running; this daemon stops it when it stops');
  let stopped: Promise<void> | undefined;
  return { url, started: true, stop: () => (stopped ??= stopOrphanIfUnused(dataDir, port, log, true).then(() => {})) };
}

/** The pid of the redis-server answering on `port` that a daemon of `dataDir` started and is gone from (or, `ownedHere`, this process took over); null when what answers is not one. */
async function orphanOf(dataDir: string, port: number, ownedHere = false): Promise<number | null> {
  let owner: { daemonPid?: unknown; redisPid?: unknown; port?: unknown };
  try {
    owner = JSON.parse(await readFile(ownerFile(dataDir), 'utf8'));
  } catch {
    return null;
  }
  if (owner.port !== port || !alive(owner.redisPid) || (!(ownedHere && owner.daemonPid === process.pid) && alive(owner.daemonPid))) return null;
  const pid = owner.redisPid as number;
  // The Redis answering on the port is that process (its own word): not another Redis (a system
  // service) while the file is stale, nor an unrelated process that got the pid since.
  return (await redisProcessId(port)) === pid ? pid : null;
}

/** Stops the orphan redis-server of `dataDir` unless another client uses it (store-users.ts); whether it stopped it. */
async function stopOrphanIfUnused(dataDir: string, port: number, log: Logger, ownedHere = false): Promise<boolean> {
  const pid = await orphanOf(dataDir, port, ownedHere);
  if (pid === null) return false;
  const url = `redis://${REDIS_HOST}:${port}`;
  const others = await otherRedisClients(port);
  if (others !== 0) {
    if (others) log.warn({ url, clients: others }, leftRunning('redis-server'));
    return false;
  }
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return false;
  }
  if (!(await goneWithin(pid, 10_000)) && (await redisProcessId(port).catch(() => null)) === pid) process.kill(pid, 'SIGKILL');
  await rm(ownerFile(dataDir), { force: true });
  log.info({ url }, 'stopped redis-server');
  return true;
}

function portBusyError(port: number, detail: string): Error {
  return new Error(
    `something is listening on ${REDIS_HOST}:${port} but it did not answer a Redis PING (${detail}). ` +
      'Free the port, pick another one, or set REDIS_URL.',
  );
}

async function findOnPath(name: string, env: NodeJS.ProcessEnv): Promise<string | undefined> {
  for (const dir of (env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    try {
      await access(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // not in this PATH entry
    }
  }
  return undefined;
}
