import type { Logger } from '../kernel/logger.js';
import { storeFailure } from './ensure-stores.js';

/**
 * A store the start found unreachable is waited for, not given up on at once: a daemon started
 * beside its Redis or Postgres (a compose file, a machine's boot, a pod whose database is still
 * failing over) is as likely to come up first as second, and an exit then (every start before
 * this) left it to a supervisor's restart loop, with `failed to start` logged as if something were
 * wrong. Only what passes by itself is waited for: the server refusing or not answering, a name
 * not resolving yet, a Postgres starting up or out of connections, a Redis loading its data. A
 * wrong password, a database that does not exist, a server answering in another protocol stops
 * the start at once, with what to fix (storeFailure); one that takes the connection and says
 * nothing (Postgres's port given as Redis's) cannot be told from a server still starting, and is
 * waited for. Each try is bounded by what is left of the wait. `waitMs` 0 waits for nothing.
 */
export async function untilReachable<T>(
  store: 'redis' | 'postgres',
  where: string,
  attempt: () => Promise<T>,
  opts: { waitMs: number; log: Logger; sleep?: (ms: number) => Promise<void> },
): Promise<T> {
  const sleep = opts.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const started = Date.now();
  let delay = 250;
  for (;;) {
    try {
      // Each try within what is left of the wait (at least 5 s): a Postgres URL pointing at a
      // server of another kind that answers nothing held the start for good.
      return await bounded(attempt(), Math.max(5000, opts.waitMs - (Date.now() - started)), store);
    } catch (err) {
      const waited = Date.now() - started;
      const left = opts.waitMs - waited;
      if (!passes(err) || left <= 0) throw storeFailure(store, where, err);
      const next = Math.min(delay, left);
      opts.log.warn({ store, at: where, err: reasonOf(err), waitedMs: waited, retryInMs: next, waitsUpToMs: opts.waitMs }, `${store} not reachable yet; waiting for it (FLOODGATE_START_WAIT_MS)`);
      await sleep(next);
      delay = Math.min(delay * 2, 5000);
    }
  }
}

/** `p`, or a rejection that names the store once `ms` passed (the try itself is left to the process's exit). */
function bounded<T>(p: Promise<T>, ms: number, store: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(Object.assign(new Error(`${store} did not answer within ${ms} ms (is the URL's port a ${store === 'redis' ? 'Redis' : 'Postgres'} server?)`), { code: 'NO_ANSWER' })), ms);
    timer.unref();
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

const networkCodes = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EHOSTDOWN',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EPIPE',
  // postgres.js's own, for a connection it gave up or that closed before it was ready.
  'CONNECT_TIMEOUT',
  'CONNECTION_CLOSED',
  'CONNECTION_ENDED',
  'CONNECTION_DESTROYED',
  // Postgres: starting up or shutting down (57P03), too many connections (53300, 53000), admin shutdown (57P01), crash recovery (57P02).
  '57P03',
  '53300',
  '53000',
  '57P01',
  '57P02',
]);

/** The error and its causes (drizzle wraps the server's; connectRedis's readiness names the last one it saw). */
function* chain(err: unknown): Generator<{ code?: unknown; message?: unknown; errors?: unknown }> {
  for (let e = err as { cause?: unknown } | undefined, depth = 0; e && typeof e === 'object' && depth < 5; e = e.cause as typeof e, depth++) {
    yield e as { code?: unknown; message?: unknown };
    // Node's AggregateError for a name with several addresses (localhost: ::1 and 127.0.0.1).
    const inner = (e as { errors?: unknown }).errors;
    if (Array.isArray(inner)) for (const i of inner) if (i && typeof i === 'object') yield i as { code?: unknown };
  }
}

function passes(err: unknown): boolean {
  for (const e of chain(err)) {
    if (typeof e.code === 'string' && networkCodes.has(e.code)) return true;
    // Redis loading its data set, or a connection that never got ready and said nothing else.
    if (typeof e.message === 'string' && /^LOADING |^redis not ready within/.test(e.message)) return !chainHasFatal(err);
  }
  return false;
}

/** A Redis that answered but refused us (a password, an ACL) is not waited for, though its connection never got ready. */
function chainHasFatal(err: unknown): boolean {
  for (const e of chain(err)) if (typeof e.message === 'string' && /^(NOAUTH|WRONGPASS|NOPERM|ERR AUTH|ERR invalid password)/.test(e.message)) return true;
  return false;
}

function reasonOf(err: unknown): string {
  for (const e of chain(err)) if (typeof e.code === 'string') return `${e.code}${typeof e.message === 'string' && e.message ? `: ${e.message}` : ''}`;
  return String((err as Error)?.message ?? err);
}
