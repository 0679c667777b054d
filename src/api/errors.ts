import type { Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { ZodError } from 'zod';
import { FloodgateError } from '../kernel/errors.js';
import type { Logger } from '../kernel/logger.js';

/** The contract's error body; never a stack trace. */
export function errorResponse(c: Context, err: FloodgateError) {
  if (err.retryAfterSec !== undefined) c.header('Retry-After', String(err.retryAfterSec));
  const body: { error: { code: string; message: string; details?: Record<string, unknown> } } = { error: { code: err.code, message: err.message } };
  if (err.details) body.error.details = err.details;
  return c.json(body, err.status as 400);
}

export function validationIssue(path: string, message: string): FloodgateError {
  return new FloodgateError('invalid_request', 'The request is not valid.', { issues: [{ path, message }] });
}

/** The request's JSON body, as the zod-openapi validator would read it: malformed or not JSON → 400. */
export async function jsonBody(c: Context): Promise<unknown> {
  if (!/^application\/([\w.-]+\+)?json(;|$)/i.test(c.req.header('content-type') ?? '')) return {};
  try {
    return await c.req.json();
  } catch {
    throw new FloodgateError('invalid_request', 'Malformed JSON in request body');
  }
}

export function validationError(error: ZodError): FloodgateError {
  // A field's own check and the whole body's hostile-bytes walk may name the same problem.
  const seen = new Set<string>();
  const issues = error.issues
    .map((i) => ({ path: i.path.join('.'), message: i.message }))
    .filter((i) => {
      const key = JSON.stringify(i);
      return !seen.has(key) && !!seen.add(key);
    });
  return new FloodgateError('invalid_request', 'The request is not valid.', { issues });
}

const redisDown = /ECONNREFUSED|ETIMEDOUT|Connection is closed|MaxRetriesPerRequest|ENOTFOUND|EHOSTUNREACH|Stream isn't writeable/i;

/** Maps anything thrown to the contract: known errors as they are, outages to 503, the rest 500. */
export function toFloodgateError(err: unknown, log: Logger): FloodgateError {
  if (err instanceof FloodgateError) return err;
  if (err instanceof HTTPException) {
    if (err.status === 413) return new FloodgateError('payload_too_large', 'The request body is too large.');
    if (err.status === 400) return new FloodgateError('invalid_request', err.message || 'The request is not valid.');
    return new FloodgateError(err.status === 404 ? 'not_found' : 'invalid_request', err.message);
  }
  const message = err instanceof Error ? err.message : String(err);
  const code = (err as { code?: string })?.code;
  if (redisDown.test(message) || (typeof code === 'string' && /^(08|57P0)/.test(code)) || code === 'CONNECTION_CLOSED' || code === 'CONNECT_TIMEOUT') {
    log.warn({ err: message }, 'dependency unavailable');
    return new FloodgateError('unavailable', 'A backing store is unreachable; try again shortly.', undefined, 2);
  }
  log.error({ err }, 'unexpected error');
  return new FloodgateError('internal', 'Internal error.');
}
