import { Redis, type Command } from 'ioredis';
import type { Logger } from '../kernel/logger.js';

/**
 * The daemon's two kinds of Redis connection.
 *
 * `api` serves HTTP and the background loops. It must fail fast while Redis is unreachable: no
 * offline queue (a command on a broken connection is refused at once, "Stream isn't writeable"),
 * a 500 ms command timeout (a command on a connection that has not noticed yet), and reconnects
 * every 50–500 ms. ioredis's defaults (offline queue, no timeout, 20 retries, backoff to 2 s) held
 * a request 12–15 s before it failed. Commands given before the first 'ready' are refused too, so
 * `connectRedis` resolves only once the connection is ready.
 *
 * `jobs` is BullMQ's: it needs `maxRetriesPerRequest: null` and keeps ioredis's offline queue,
 * which its blocking and retrying logic expects.
 */

export const API_COMMAND_TIMEOUT_MS = 500;
const RECONNECT_MAX_MS = 500;
const READY_TIMEOUT_MS = 10_000;
/** An outage logs its first error and then at most one line per this many ms, not one per retry. */
const ERROR_LOG_EVERY_MS = 30_000;

export async function connectRedis(url: string, kind: 'api' | 'jobs', log: Logger): Promise<Redis> {
  const redis =
    kind === 'api'
      ? new Redis(url, {
          enableAutoPipelining: true,
          enableOfflineQueue: false,
          maxRetriesPerRequest: 1,
          connectTimeout: 2000,
          retryStrategy: (times) => Math.min(times * 50, RECONNECT_MAX_MS),
        })
      : new Redis(url, { maxRetriesPerRequest: null });
  if (kind === 'api') timeOutCommands(redis, API_COMMAND_TIMEOUT_MS);
  logOutages(redis, log.child({ redis: kind }));
  if (kind === 'api') await whenReady(redis);
  return redis;
}

/**
 * ioredis's `commandTimeout`, except that a reply already received wins. ioredis rejects from a
 * plain timer; after the event loop was held up (a busy CPU, a long GC pause, a 2-core machine
 * running a test suite beside the daemon) the timers run before the sockets are read, so a
 * command whose answer had arrived in a millisecond was failed as "timed out" and its HTTP
 * request answered 503 — a false "Redis unavailable". Here the timer only schedules the rejection
 * for after the next poll phase (setImmediate): answers waiting in the socket are read first, and a
 * Redis that truly does not answer still fails the command one loop turn after `ms`.
 */
function timeOutCommands(redis: Redis, ms: number) {
  const send = redis.sendCommand.bind(redis);
  redis.sendCommand = ((command: Command, stream?: unknown) => {
    const timer = setTimeout(() => {
      setImmediate(() => {
        if (!command.isSettled) command.reject(new Error('Command timed out'));
      });
    }, ms);
    const clear = () => clearTimeout(timer);
    command.promise.then(clear, clear);
    return send(command, stream as never);
  }) as Redis['sendCommand'];
}

function whenReady(redis: Redis): Promise<void> {
  if (redis.status === 'ready') return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      redis.off('ready', onReady);
      redis.disconnect();
      reject(new Error(`redis not ready within ${READY_TIMEOUT_MS} ms`));
    }, READY_TIMEOUT_MS);
    const onReady = () => {
      clearTimeout(timer);
      resolve();
    };
    redis.once('ready', onReady);
  });
}

/** Logs a connection's outage once when it starts, then rarely, and once when it ends. */
function logOutages(redis: Redis, log: Logger) {
  let down = false;
  let lastLogged = 0;
  let suppressed = 0;
  redis.on('error', (err: Error) => {
    const now = Date.now();
    if (!down || now - lastLogged >= ERROR_LOG_EVERY_MS) {
      log.warn({ err: err.message, suppressed }, down ? 'redis still unreachable' : 'redis error');
      lastLogged = now;
      suppressed = 0;
    } else suppressed++;
    down = true;
  });
  redis.on('ready', () => {
    if (down) log.info('redis reachable again');
    down = false;
  });
}
