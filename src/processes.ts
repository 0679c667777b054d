/**
 * `FLOODGATE_PROCESSES=auto|N`: one daemon process per core on one machine, behind one port.
 *
 * The primary process owns what must exist once: it starts (or finds) Redis and Postgres, runs the
 * migrations, and makes the run's keys; then it forks N workers with node:cluster. Each worker is
 * a whole daemon (src/daemon.ts's startDaemon) with the store URLs and keys the primary settled, so
 * N workers share the lines, the gates and the leases through Redis exactly as N daemons on N
 * machines do: nothing is shared in memory, and nothing new had to be made safe for it. The
 * listening socket is the primary's; node:cluster hands each new connection to the next worker
 * (round-robin), so a keep-alive client stays on one worker.
 *
 * The primary restarts a worker that dies, later and later while it dies before it serves (a
 * worker crash loop, 5 deaths in a minute while no worker serves, stops the whole group: a
 * supervisor above should see it), and on SIGTERM/SIGINT stops the workers
 * (each drains as a single daemon does), then the stores it started.
 */
import cluster, { type Worker } from 'node:cluster';
import os from 'node:os';
import { GROUP_WORKER, isGroupWorkerEnv, storeSettings, type Config } from './config.js';
import { migrateDb, pingDb } from './db/client.js';
import { ensureStores, storeFailure } from './infra/ensure-stores.js';
import { untilReachable } from './infra/start-wait.js';
import { describeTarget, seedList } from './infra/redis-client.js';
import type { Logger } from './kernel/logger.js';
import { servePrimaryMetrics } from './kernel/cluster-metrics.js';
import { redactUrl } from './kernel/redact-url.js';

/** `auto` = the cores Node may use; a number as given; unset = 1 (a single process, no primary). */
export function processCount(setting: string | undefined, cores = os.availableParallelism()): number {
  if (!setting) return 1;
  return setting === 'auto' ? Math.max(1, cores) : Number(setting);
}

/** A worker of this daemon's group of processes (not just any node:cluster worker: PM2's cluster mode forks the daemon too). */
export const isClusterWorker = () => cluster.isWorker && isGroupWorkerEnv();

const RESTARTS_PER_MINUTE = 5;
const RESTART_MS = 500;
const RESTART_MAX_MS = 10_000;

/**
 * node:cluster's round-robin has the primary accept each connection and hand it to a worker, and
 * keeps its own copy open until the worker says it took it. A worker that dies before it says so
 * (SIGKILL, a crash) never will: each connection handed to it in its last moments stayed open in
 * the primary, unanswered, for as long as the client would wait (forever for most), where one
 * daemon's death resets its connections and the client asks again. Those are closed when the
 * worker exits. (Node's own messages, NODE_CLUSTER `newconn` and its `ack`, read as they pass.)
 */
function closeLostConnections(w: Worker) {
  type Message = { cmd?: string; act?: string; seq?: number; ack?: number };
  const handedOver = new Map<number, { close(): void }>();
  const proc = w.process as unknown as { send(msg: Message, handle?: unknown, ...rest: unknown[]): boolean; on(event: 'internalMessage', fn: (m: Message) => void): void };
  const send = proc.send.bind(proc);
  proc.send = (msg, handle, ...rest) => {
    if (msg?.cmd === 'NODE_CLUSTER' && msg.act === 'newconn' && typeof msg.seq === 'number' && handle) handedOver.set(msg.seq, handle as { close(): void });
    return send(msg, handle, ...rest);
  };
  proc.on('internalMessage', (m) => {
    if (m?.cmd === 'NODE_CLUSTER' && typeof m.ack === 'number') handedOver.delete(m.ack);
  });
  w.once('exit', () => {
    for (const handle of handedOver.values()) handle.close();
    handedOver.clear();
  });
}

/**
 * Whether a group whose worker just died stops (exit 1), and why; never while one serves: a
 * worker that cannot start for a while beside one that serves is a stores outage the serving one
 * rides out as one daemon does. With none serving: five deaths in a minute (a crash loop), or
 * every slot's last two processes died before they served. A start waits for its stores
 * (FLOODGATE_START_WAIT_MS, 60 s) before it fails, so with that wait five deaths a minute never
 * came with two workers, and a group that could not start served nothing and never stopped (a
 * review saw 200 s of it), while one daemon gives up after the wait.
 */
export function groupGivesUp(s: { deathsLastMinute: number; serving: number; neverServed: ReadonlyMap<number, number>; processes: number }): 'crash loop' | 'no worker can start' | null {
  if (s.serving > 0) return null;
  if (s.deathsLastMinute >= RESTARTS_PER_MINUTE) return 'crash loop';
  if (s.neverServed.size === s.processes && [...s.neverServed.values()].every((f) => f >= 2)) return 'no worker can start';
  return null;
}

/**
 * Runs the primary: stores, migrations, N workers. Resolves, once the workers are forked, with
 * the stop a signal asks for (main.ts routes SIGTERM/SIGINT to it); the process exits when that
 * stop or a crash loop ends.
 */
export async function runPrimary(config: Config, log: Logger, n: number, onServing?: () => void): Promise<(signal: string) => void> {
  const stores = await ensureStores(storeSettings(config), log);
  const pg = { url: stores.pgUrl };
  await untilReachable('postgres', redactUrl(pg.url), () => pingDb(pg.url), { waitMs: config.FLOODGATE_START_WAIT_MS, log });
  await migrateDb(pg.url, log).catch((err) => Promise.reject(storeFailure('postgres', redactUrl(pg.url), err)));

  // The workers read their configuration as any daemon does, with what the primary settled on top.
  const env: Record<string, string> = {
    // Everything the primary read, its .env included (a worker does not read the file: main.ts).
    ...Object.fromEntries(Object.entries(config.environment).filter((e): e is [string, string] => e[1] !== undefined)),
    ...('url' in stores.redis ? { REDIS_URL: stores.redis.url } : { FLOODGATE_REDIS_CLUSTER: seedList(stores.redis.cluster) }),
    DATABASE_URL: pg.url,
    FLOODGATE_SERVICE_KEYS: config.FLOODGATE_SERVICE_KEYS.join(','),
    FLOODGATE_OPERATOR_KEYS: config.FLOODGATE_OPERATOR_KEYS.join(','),
    // A worker is one daemon; it must not start a group of its own.
    FLOODGATE_PROCESSES: '1',
    [GROUP_WORKER]: '1',
  };
  let stopping = false;
  let servedOnce = false;
  const deaths: number[] = [];
  // The workers that listen (serve); and, for each worker slot, how many of its processes in a row
  // died before they listened (a worker that cannot start: its stores unreachable, say).
  const serving = new Set<Worker>();
  const everServed = new WeakSet<Worker>();
  const failedStarts = new Map<number, number>();
  // For each slot, its processes in a row that died before they served at all.
  const neverServed = new Map<number, number>();
  const fork = (index: number): Worker => {
    const w = cluster.fork(env);
    closeLostConnections(w);
    w.once('listening', () => {
      // (The first worker to listen: the group serves. main.ts publishes the run's keys then.)
      if (serving.size === 0 && !servedOnce) {
        servedOnce = true;
        onServing?.();
      }
      serving.add(w);
      everServed.add(w);
      failedStarts.delete(index);
      neverServed.delete(index);
    });
    w.on('exit', (code, signal) => {
      serving.delete(w);
      if (stopping) return;
      const now = performance.now();
      deaths.push(now);
      while (deaths.length && deaths[0] < now - 60_000) deaths.shift();
      // A slot whose processes keep dying at the start is restarted less and less often (0.5 s,
      // 1 s, 2 s … 10 s), not every 500 ms.
      const failed = failedStarts.get(index) ?? 0;
      failedStarts.set(index, failed + 1);
      if (!everServed.has(w)) neverServed.set(index, (neverServed.get(index) ?? 0) + 1);
      const restartInMs = Math.min(RESTART_MS * 2 ** failed, RESTART_MAX_MS);
      log.error({ worker: index, pid: w.process.pid, code, signal, restartInMs }, 'worker process died');
      const givesUp = groupGivesUp({ deathsLastMinute: deaths.length, serving: serving.size, neverServed, processes: n });
      if (givesUp) {
        log.fatal({ deaths: deaths.length, processes: n }, givesUp === 'crash loop' ? 'workers keep dying; stopping' : 'no worker process can start; stopping');
        return void shutdown(givesUp, 1);
      }
      // Not unref'd: with every worker dead, this timer is all that keeps the primary alive.
      setTimeout(() => !stopping && workers.set(index, fork(index)), restartInMs);
    });
    return w;
  };
  servePrimaryMetrics();
  const workers = new Map<number, Worker>();
  for (let i = 0; i < n; i++) workers.set(i, fork(i));
  log.info({ processes: n, port: config.PORT, redis: describeTarget(stores.redis, redactUrl), postgres: redactUrl(pg.url) }, 'floodgate primary started its worker processes');

  async function shutdown(why: string, code = 0) {
    if (stopping) return;
    stopping = true;
    log.info({ why }, 'stopping worker processes');
    const force = setTimeout(() => {
      log.error('shutdown timed out; exiting');
      process.exit(1);
    }, config.FLOODGATE_SHUTDOWN_MS + 2000);
    force.unref();
    // A worker whose stop cut jobs short exits 1 (main.ts): the group's exit says so too, as one
    // process's does (it exited 0 whatever its workers did). So does one a signal killed (it did
    // not drain: its exit code is null), unless it never served.
    let cutShort = false;
    await Promise.all(
      [...workers.values()].map(
        (w) =>
          new Promise<void>((resolve) => {
            if (w.isDead()) return resolve();
            w.once('exit', (exitCode: number | null, signal: string | null) => {
              // A worker still starting has no handler for the signal yet and dies of it: nothing
              // ran in it, so nothing was cut short (a group stopped as it started exited 1).
              if (((exitCode !== null && exitCode !== 0) || signal !== null) && everServed.has(w)) cutShort = true;
              resolve();
            });
            w.process.kill('SIGTERM');
          }),
      ),
    );
    await stores.stop();
    log.info({ workersFailed: cutShort }, 'stopped');
    process.exit(cutShort ? 1 : code);
  }
  return (signal) => void shutdown(signal);
}
