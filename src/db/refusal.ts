import { isPgBusyCode, isPgLostCode } from '../kernel/pg-lost.js';

/**
 * Tells a lost or unusable connection from a statement Postgres refused. The sale writer retries a
 * refused batch row by row and the outcome ledger in halves, so one bad row fails only itself; a lost
 * connection fails the whole call as before (every row would fail the same way, and the caller's
 * retries and 503s are made for it).
 *
 * Lost: what kernel/pg-lost.ts lists (the connection gone, the server out of resources, shutting
 * down, or read-only): every row would be refused alike, and a sale refused for it must wait, not
 * fail. Busy: Postgres gave the call up for now (a deadlock, a lock or statement timeout): asked
 * again later it would likely pass, so it waits too. Anything else thrown by a call (a data
 * exception such as NUL in jsonb, a constraint, a value the driver cannot send) is a refusal of
 * that call.
 */
export function isConnectionLoss(err: unknown): boolean {
  return isPgLostCode((err as { code?: unknown } | null)?.code);
}

/** Lost (above) or busy: a call no row of which Postgres can take now, so it must wait, not fail. */
export function mustWait(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return isPgLostCode(code) || isPgBusyCode(code);
}

/** SQLSTATE classes 22 (data exception) and 23 (integrity violation): the row itself is bad, and asking again cannot help. */
export function isBadRow(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^2[23][0-9A-Z]{3}$/.test(code);
}
