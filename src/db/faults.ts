/**
 * Is this error Postgres being unreachable (as opposed to Postgres refusing the statement)? Walks
 * `.cause`, since drizzle and our own layers wrap the driver's errors. postgres.js reports lost
 * connections with its own codes (CONNECTION_CLOSED, …), socket errors with errno codes, and the
 * server's shutdown and connection failures with SQLSTATE classes 08 and 57P.
 */
const driverCodes = new Set(['CONNECTION_CLOSED', 'CONNECTION_ENDED', 'CONNECTION_DESTROYED', 'CONNECT_TIMEOUT', 'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);

export function isPostgresUnavailable(err: unknown): boolean {
  for (let e = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && (driverCodes.has(code) || /^(08|57P0)/.test(code))) return true;
  }
  return false;
}
