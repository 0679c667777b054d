import { loadConfig } from '../../src/config.js';
import type { Clock } from '../../src/kernel/clock.js';
import { askAgainOn503 } from './joins.js';
import { createLogger, type Logger } from '../../src/kernel/logger.js';
import { startDaemon, type Daemon } from '../../src/daemon.js';
import { whenDone } from './cleanup.js';
import { http } from './http.js';
import { redisUrl } from './redis.js';

export const OP = 'op-key';
export const SVC = 'svc-key';

/** The whole daemon (API, dispatcher, workers) in this process, on a free port; stopped after the file, or after the test that started it. */
export async function inProcessDaemon(opts: { prefix: string; databaseUrl: string; env?: Record<string, string>; log?: Logger; /** This machine's clock as the daemon reads it (the system's). */ clock?: Clock }) {
  const config = loadConfig({
    PORT: '0',
    HOST: '127.0.0.1',
    REDIS_URL: redisUrl(),
    DATABASE_URL: opts.databaseUrl,
    FLOODGATE_REDIS_PREFIX: opts.prefix,
    FLOODGATE_SERVICE_KEYS: SVC,
    FLOODGATE_OPERATOR_KEYS: OP,
    ...opts.env,
  });
  const daemon: Daemon = await startDaemon(config, opts.log ?? createLogger(process.env.TEST_LOG_LEVEL ?? 'silent'), opts.clock);
  whenDone(() => daemon.stop());
  const call = (method: string, path: string, body?: unknown, key: string | null = OP) => http(daemon.url, method, path, body, key);
  /**
   * Defines an item as an operator's client would: a `503` (a busy machine's Redis command past
   * its budget) asked again for up to 30 s; anything but 200/201 throws, so a test never goes on
   * without its item (one did, and read a 404 from the item's series later).
   */
  const define = (itemId: string, body: unknown) => askAgainOn503(() => call('PUT', `/v1/items/${itemId}`, body), [200, 201], Date.now() + 30_000, `PUT /v1/items/${itemId}`);
  return { daemon, call, define };
}

export async function waitFor<T>(fn: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 20_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (ok(v) || Date.now() > until) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * A logger that keeps the daemon's last lines at `level` and above in memory, for a test to show
 * when it fails (an in-process daemon logs nothing by default).
 */
export function recordingLogger(level = 'warn', keep = 50): { log: Logger; lines(): string } {
  const kept: string[] = [];
  const log = createLogger(level, {
    destination: {
      write(line: string) {
        kept.push(line.trimEnd());
        if (kept.length > keep) kept.shift();
      },
    },
  });
  return { log, lines: () => (kept.length ? `the daemon's last log lines:\n${kept.join('\n')}` : 'the daemon logged nothing at warn or above') };
}
