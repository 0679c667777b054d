import { isPgBusyCode } from '../kernel/pg-lost.js';
import { mustWait } from './refusal.js';

/**
 * Is this error Postgres being unreachable, or busy (a deadlock, a lock or statement timeout), as
 * opposed to Postgres refusing the statement? Either way the call must wait. Walks
 * `.cause`, since drizzle and our own layers wrap the driver's errors (db/refusal.ts has the codes).
 */
export const isPostgresUnavailable = (err: unknown) => anyCause(err, mustWait);

/** Is this error Postgres giving the call up for now (a lock or statement timeout, a deadlock), not unreachable? */
export const isPostgresBusy = (err: unknown) => anyCause(err, (e) => isPgBusyCode((e as { code?: unknown } | null)?.code));

/** Whether the error or one of its `.cause`s (five deep at most) is one `is` names. */
function anyCause(err: unknown, is: (e: unknown) => boolean): boolean {
  for (let e = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) if (is(e)) return true;
  return false;
}

/**
 * Is this the failure of the array-type query postgres.js runs on each new connection? postgres.js
 * 3.4.9 starts that query without keeping its promise (connection.js, ReadyForQuery →
 * fetchArrayTypes; porsager/postgres#1192, #1205, #1223), so a connection reset or cancelled at
 * that moment becomes an unhandled rejection no caller can catch — seen in a test of a Postgres
 * outage. Nothing is lost with it: the connection closes and the pool opens another on demand.
 * The daemon logs it and goes on (main.ts); the tests let it pass (vitest.config.ts).
 */
export function isTypeFetchFailure(err: unknown): boolean {
  const query = (err as { query?: unknown } | null)?.query;
  return typeof query === 'string' && query.includes('pg_catalog.pg_type') && query.includes('typarray');
}
