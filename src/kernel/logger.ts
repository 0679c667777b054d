import fs from 'node:fs';
import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger };

/**
 * Most bytes of log lines held for an output that does not take them (a reader that stopped
 * reading the pipe, a full disk): past it, lines are dropped and counted (loggedDropped), instead
 * of the process's memory growing with every line it could not write.
 */
export const LOG_BUFFER_MAX = 16 * 1024 * 1024;

/** How long a synchronous flush waits for a pipe whose reader lags. */
const FLUSH_WAIT_MS = 2000;

const stats = { dropped: 0, failed: 0 };
/** Log lines dropped (the output took nothing while LOG_BUFFER_MAX waited) and writes that failed, since the start. */
export const logOutputStats = (): Readonly<typeof stats> => stats;

/** JSON logs: a constant lowercase message plus a fields object; child loggers per module. */
export function createLogger(level: string, opts: { stderr?: boolean; /** Where lines go instead of stdout/stderr (a test keeps them). */ destination?: { write(line: string): void } } = {}): Logger {
  const options = { level, base: { service: 'floodgate' }, timestamp: pino.stdTimeFunctions.isoTime };
  return pino(options, opts.destination ?? output(opts.stderr ? 2 : 1));
}

/**
 * stdout (or stderr) written as pino's default is (sonic-boom, asynchronous), but an output that
 * refuses writes does not stop the daemon. A failed write (ENOSPC on a full disk, EIO) was
 * re-emitted by pino as an uncaught error, and the daemon's exit on it logged `fatal`, whose
 * synchronous flush sonic-boom retries every 100 ms for as long as the write fails: the daemon
 * answered nothing, not even /healthz, for the 11 minutes the disk stayed full, then exited (a
 * review). Now a failed write leaves its lines buffered for the next write that works (dropped
 * past LOG_BUFFER_MAX), and a synchronous flush tries each write once and never throws.
 */
function output(fd: number): DestinationStream {
  const dest = pino.destination({ dest: fd, sync: false, maxLength: LOG_BUFFER_MAX, retryEAGAIN: (err: Error) => !(err as { once?: boolean }).once });
  dest.on('error', () => void stats.failed++);
  dest.on('drop', () => void stats.dropped++);
  const flushSync = dest.flushSync.bind(dest);
  // sonic-boom's flushSync retries every failed write but one it may give up on: EAGAIN that
  // retryEAGAIN refuses. So for the flush, a failed write reads as that (once: the flag).
  // A pipe whose reader lags (EAGAIN) is waited on as sonic-boom does, for FLUSH_WAIT_MS at most.
  dest.flushSync = () => {
    const writeSync = fs.writeSync;
    const from = performance.now();
    fs.writeSync = ((...args: Parameters<typeof fs.writeSync>) => {
      try {
        return writeSync(...args);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EAGAIN' && performance.now() - from < FLUSH_WAIT_MS) throw err;
        throw Object.assign(err as Error, { code: 'EAGAIN', once: true });
      }
    }) as typeof fs.writeSync;
    try {
      flushSync();
    } catch {
      // The output refused it: the lines stay buffered (pino's exit hook flushes too, and a throw
      // there ended a clean stop with exit 1).
    } finally {
      fs.writeSync = writeSync;
    }
  };
  return dest;
}
