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
