import { pino, type Logger } from 'pino';

export type { Logger };

/** JSON logs: a constant lowercase message plus a fields object; child loggers per module. */
export function createLogger(level: string, opts: { stderr?: boolean } = {}): Logger {
  const options = { level, base: { service: 'floodgate' }, timestamp: pino.stdTimeFunctions.isoTime };
  return opts.stderr ? pino(options, pino.destination(2)) : pino(options);
}
