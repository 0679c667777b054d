import { isConnectionLoss } from './refusal.js';

/**
 * Is this error Postgres being unreachable (as opposed to Postgres refusing the statement)? Walks
 * `.cause`, since drizzle and our own layers wrap the driver's errors (db/refusal.ts has the codes).
 */
export function isPostgresUnavailable(err: unknown): boolean {
  for (let e = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) if (isConnectionLoss(e)) return true;
  return false;
}
