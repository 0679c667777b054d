/**
 * Tells a lost or unusable connection from a statement Postgres refused. The sale writer and the
 * outcome ledger retry a refused batch row by row, so one bad row fails only itself; a lost
 * connection fails the whole call as before (every row would fail the same way, and the caller's
 * retries and 503s are made for it).
 *
 * Lost: postgres.js's connection codes, socket errors, and SQLSTATE classes 08 (connection
 * exception), 53 (insufficient resources: disk full, too many connections) and 57P0x (the server
 * shutting down or starting). Anything else thrown by a call (a data exception such as NUL in
 * jsonb, a constraint, a deadlock, a value the driver cannot send) is a refusal of that call.
 */
const LOST = new Set([
  'CONNECTION_CLOSED', 'CONNECTION_ENDED', 'CONNECTION_DESTROYED', 'CONNECT_TIMEOUT',
  'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN',
]);

export function isConnectionLoss(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && (LOST.has(code) || /^(08|53|57P0)/.test(code));
}

/** SQLSTATE classes 22 (data exception) and 23 (integrity violation): the row itself is bad, and asking again cannot help. */
export function isBadRow(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^2[23][0-9A-Z]{3}$/.test(code);
}
