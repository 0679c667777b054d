import { pino, type Logger } from 'pino';

export type { Logger };

/** JSON logs: a constant lowercase message plus a fields object; child loggers per module. */
export function createLogger(level: string, opts: { stderr?: boolean; /** Where lines go instead of stdout/stderr (a test keeps them). */ destination?: { write(line: string): void } } = {}): Logger {
  const options = { level, base: { service: 'floodgate' }, timestamp: pino.stdTimeFunctions.isoTime };
  return pino(options, opts.destination ?? (opts.stderr ? pino.destination(2) : undefined));
}
