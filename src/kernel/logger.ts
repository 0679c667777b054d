import { pino, type Logger } from 'pino';

export type { Logger };

/** JSON logs: a constant lowercase message plus a fields object; child loggers per module. */
export function createLogger(level: string): Logger {
  return pino({ level, base: { service: 'floodgate' }, timestamp: pino.stdTimeFunctions.isoTime });
}
