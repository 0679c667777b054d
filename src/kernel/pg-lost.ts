/**
 * Whether a Postgres error code says the database cannot take the call at all, whatever the call:
 * postgres.js's connection codes (and db/watched-sockets.ts's SSL_NOT_SUPPORTED: a server without
 * the TLS the URL requires), Node's socket codes, and SQLSTATE classes 08 (connection
 * exception), 53 (insufficient resources: disk full, too many connections), 57P0x (the server
 * shutting down or starting) and 25006 (a read-only session: a standby, or writes switched off).
 * The sale path waits on these instead of failing a ticket (db/refusal.ts), and the API answers
 * them 503 (api/errors.ts); a read-only Postgres answered a gate change 500.
 */
const LOST = new Set([
  'CONNECTION_CLOSED', 'CONNECTION_ENDED', 'CONNECTION_DESTROYED', 'CONNECT_TIMEOUT', 'SSL_NOT_SUPPORTED',
  'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN',
]);

export function isPgLostCode(code: unknown): boolean {
  return typeof code === 'string' && (LOST.has(code) || /^(08|53|57P0|25006$)/.test(code));
}

/**
 * SQLSTATE codes of a call Postgres gave up for now, whatever its rows, and would likely take if
 * asked again later: 40001 (serialization failure), 40P01 (deadlock: Postgres chose this call as
 * the victim), 55P03 (lock not available: `lock_timeout`) and 57014 (cancelled: `statement_timeout`,
 * as an operator may set on the role, or `pg_cancel_backend`). A sale refused for one of these must
 * wait like one refused by a lost connection: it used to be asked again row by row (adding load to
 * a Postgres already too slow) and to fail its tickets after their job's attempts.
 */
const BUSY = new Set(['40001', '40P01', '55P03', '57014']);

export function isPgBusyCode(code: unknown): boolean {
  return typeof code === 'string' && BUSY.has(code);
}
