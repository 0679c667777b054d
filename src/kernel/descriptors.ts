import { readdir, readFile } from 'node:fs/promises';
import type { Logger } from './logger.js';

/**
 * The process's open file descriptors against its limit (`ulimit -n`), read from /proc/self
 * (Linux; elsewhere it reads nothing). At the limit Node accepts each new connection and closes it
 * at once, and a store connection that must open fails: a daemon under a flood of idle
 * connections showed nothing of it — no log line, and /readyz and /metrics out of reach (a
 * review). Past WARN_AT of the limit it says so once, with the numbers; under CLEAR_AT again, once.
 * (`process_open_fds` and `process_max_fds` in /metrics are the same numbers.)
 */
const WARN_AT = 0.9;
const CLEAR_AT = 0.8;

export function descriptorWatch(log: Logger, proc = '/proc/self') {
  let limit: number | null | undefined;
  let warned = false;
  return {
    async check(): Promise<{ open: number; limit: number } | null> {
      if (limit === undefined) {
        const limits = await readFile(`${proc}/limits`, 'utf8').catch(() => '');
        const soft = /^Max open files\s+(\d+)/m.exec(limits)?.[1];
        limit = soft ? Number(soft) : null;
      }
      if (!limit) return null;
      const open = (await readdir(`${proc}/fd`).catch(() => null))?.length;
      if (open === undefined) return null;
      const share = open / limit;
      if (!warned && share >= WARN_AT) {
        warned = true;
        log.warn({ open, limit }, 'file descriptors nearly all in use: at the limit new connections are closed as they come and a store connection cannot open; raise the limit (ulimit -n, LimitNOFILE) or find who holds connections open');
      } else if (warned && share < CLEAR_AT) {
        warned = false;
        log.info({ open, limit }, 'file descriptors in use back under 80% of the limit');
      }
      return { open, limit };
    },
  };
}
